"""Hot reload of routes.yaml: atomic swap, refusal of a bad file, the watcher, SIGHUP, reload under load."""

from __future__ import annotations

import asyncio
import bisect
import logging
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from support.opshelp import INVALID_ROUTES, routes_text, start_gateway, upstream, write_atomically
from support.waiting import eventually

from proxy.ops.admin import AdminState
from proxy.ops.metrics import RequestStats, local_registry
from proxy.ops.reload import Reloader, read_routes
from proxy.routing.table import parse_routes
from proxy.server.gateway import Gateway


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("strangler_reload_total", {"result": result}) or 0.0


def make_reloader(path: Path) -> tuple[Reloader, Gateway, AdminState]:
    table, raw = read_routes(str(path))
    gateway = Gateway(table)
    state = AdminState(table, str(path), local_registry(RequestStats()))
    return Reloader(str(path), state, lambda t, _raw: gateway.set_table(t), raw), gateway, state


def test_valid_file_swaps_the_live_table(tmp_path: Path) -> None:
    """A valid new file becomes the gateway's table and the admin state's, counted as a success."""
    path = tmp_path / "routes.yaml"
    path.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "legacy"))
    reloader, gateway, state = make_reloader(path)
    before = reloads("success")
    write_atomically(path, routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "new"))
    assert reloader.reload("SIGHUP") is True
    assert gateway.table.match("GET", "/items/1").route.target == "new"
    assert state.table is gateway.table
    assert state.last_reload.result == "success"
    assert reloads("success") == before + 1
    gateway.close()


def test_invalid_file_is_refused_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad file leaves the old table serving, logs each error with file:line and counts a failure."""
    path = tmp_path / "routes.yaml"
    path.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "new"))
    reloader, gateway, state = make_reloader(path)
    old = gateway.table
    before = reloads("failure")
    path.write_text(INVALID_ROUTES)
    with caplog.at_level(logging.ERROR, logger="strangler"):
        assert reloader.reload("SIGHUP") is False
    assert gateway.table is old
    assert state.table is old
    assert reloads("failure") == before + 1
    assert state.last_reload.result == "failure"
    assert any(f"{path}:7:" in e for e in state.last_reload.errors)
    logged = [getattr(r, "fields", {}) for r in caplog.records]
    assert any(f.get("file") == str(path) and f.get("line") == 7 for f in logged)
    gateway.close()


def test_reverting_a_bad_edit_clears_the_reported_failure(tmp_path: Path) -> None:
    """A bad edit reverted to the live table is no longer reported as a failed reload."""
    path = tmp_path / "routes.yaml"
    good = routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "new")
    path.write_text(good)
    reloader, gateway, state = make_reloader(path)
    old = gateway.table
    write_atomically(path, INVALID_ROUTES)
    assert reloader.reload("watch") is False
    assert state.last_reload.result == "failure"
    write_atomically(path, good)
    assert reloader.reload("watch") is False  # nothing new to apply
    assert gateway.table is old
    assert state.last_reload.result == "unchanged"
    assert state.last_reload.errors == []
    gateway.close()


async def test_watcher_reloads_changes_and_counts_a_bad_file_once(tmp_path: Path) -> None:
    """The poller applies a changed file promptly and counts one failure per bad content, even if touched."""
    path = tmp_path / "routes.yaml"
    path.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "legacy"))
    reloader, gateway, state = make_reloader(path)
    polls = 0
    changed = reloader.changed

    def counted() -> bool:  # the real check, counted: the test waits for polls, not for time
        nonlocal polls
        polls += 1
        return changed()

    reloader.changed = counted  # type: ignore[method-assign]  # instrumented, not replaced

    async def more_polls(n: int) -> None:
        want = polls + n
        await eventually(lambda: polls >= want, what=f"{n} more polls", last=lambda: polls)

    def target() -> str:
        return gateway.table.match("GET", "/items/1").route.target

    watcher = asyncio.create_task(reloader.watch(0.05))
    try:
        write_atomically(path, routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "new"))
        await eventually(lambda: target() == "new", what="the new table applied", last=target)
        failures = reloads("failure")
        write_atomically(path, INVALID_ROUTES)
        await eventually(lambda: state.last_reload.result == "failure", what="a failed reload")
        await more_polls(4)  # several more polls of the same bad content
        assert reloads("failure") == failures + 1
        write_atomically(path, INVALID_ROUTES)  # touched (new inode and mtime), same bad content
        await more_polls(4)
        assert reloads("failure") == failures + 1
        assert gateway.table.match("GET", "/items/1").route.target == "new"
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        gateway.close()


async def backend(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200
        return str((await resp.json())["backend"])


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_table(tmp_path: Path) -> None:
    """In a real process, SIGHUP applies a valid file; a bad one is refused and /routes says why."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path, "--reload-interval", "600")
        try:
            async with aiohttp.ClientSession() as s:
                assert await backend(s, gw.url + "/items/1") == "legacy"
                write_atomically(path, routes_text(leg.url, new.url, "new"))
                mark = len(gw.lines)
                gw.signal(signal.SIGHUP)
                await gw.wait_for("routes reloaded", after=mark)
                assert await backend(s, gw.url + "/items/1") == "new"
                path.write_text(INVALID_ROUTES)
                mark = len(gw.lines)
                gw.signal(signal.SIGHUP)
                await gw.wait_for("routes reload failed", after=mark)
                assert await backend(s, gw.url + "/items/1") == "new"
                routes = await (await s.get(gw.admin_url + "/routes")).json()
                assert routes["last_reload"]["result"] == "failure"
                assert any(f"{path}:7:" in e for e in routes["last_reload"]["errors"])
                assert routes["routes"][0]["target"] == "new"
                metrics = await (await s.get(gw.admin_url + "/metrics")).text()
                assert 'strangler_reload_total{result="failure"} 1.0' in metrics
                assert 'strangler_reload_total{result="success"} 1.0' in metrics
        finally:
            assert await gw.stop() == 0


@pytest.mark.slow
async def test_reload_under_load_loses_no_request(tmp_path: Path) -> None:
    """2000+ requests across flips (one invalid): none fail, each is served by the table live at its start."""
    async with upstream("legacy") as leg, upstream("new") as new:
        texts = {t: routes_text(leg.url, new.url, t) for t in ("legacy", "new")}
        target_of = {parse_routes(text, "x").sha256: t for t, text in texts.items()}
        path = tmp_path / "routes.yaml"
        path.write_text(texts["legacy"])
        gw = await start_gateway(path, "--reload-interval", "0.1", "--no-access-log")
        schedule = ["new", "legacy", "invalid", "new", "legacy", "new"]
        results: list[tuple[float, float, str]] = []
        errors: list[str] = []
        flipping = True

        async def flipper() -> None:
            nonlocal flipping
            outcomes = ("routes reloaded", "routes reload failed")
            for target in schedule:
                await some_load()
                mark = len(gw.lines)
                write_atomically(path, INVALID_ROUTES if target == "invalid" else texts[target])
                # Wait for this flip to be applied (or refused) so a slow poll cannot merge two flips.
                await eventually(
                    lambda mark=mark: any(line.get("msg") in outcomes for line in gw.lines[mark:]),
                    what=f"the reload to {target}",
                )
            await some_load()  # on the final table
            flipping = False

        async def some_load() -> None:
            """Until 250 more requests were answered: load on the table in force."""
            want = len(results) + len(errors) + 250
            await eventually(lambda: len(results) + len(errors) >= want, what="250 more requests")

        async def client(session: aiohttp.ClientSession, worker: int) -> None:
            i = 0
            while (flipping or len(results) + len(errors) < 2000) and len(results) + len(errors) < 10000:
                start = time.time()
                try:
                    async with session.get(f"{gw.url}/items/{worker}-{i}") as resp:
                        body = await resp.json()
                        if resp.status != 200:
                            errors.append(f"status {resp.status}: {body}")
                        else:
                            results.append((start, time.time(), body["backend"]))
                except (aiohttp.ClientError, ValueError) as exc:
                    errors.append(repr(exc))
                i += 1

        try:
            async with asyncio.timeout(40):
                connector = aiohttp.TCPConnector(limit=32)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await asyncio.gather(flipper(), *(client(session, w) for w in range(24)))
        finally:
            assert await gw.stop() == 0
        assert errors == []
        assert len(results) >= 2000
        applied = [(line["ts"], target_of[line["sha256"]]) for line in gw.lines
                   if line.get("msg") == "routes reloaded"]  # fmt: skip
        refused = [line for line in gw.lines if line.get("msg") == "routes reload failed"]
        assert [t for _, t in applied] == ["new", "legacy", "new", "legacy", "new"]
        assert len(refused) == 1
        # Each request that started clear of any reload went to the target live at its start.
        times = [ts for ts, _ in applied]
        checked = 0
        for start, end, got in results:
            before = bisect.bisect_left(times, start - 0.01)
            if before < len(times) and times[before] <= end:
                continue  # a reload happened while this request was starting: either table is right
            expected = applied[before - 1][1] if before else "legacy"
            assert got == expected, (start, end, got, applied)
            checked += 1
        assert checked > len(results) // 2
        assert {got for _, _, got in results} == {"legacy", "new"}


async def test_reload_reaches_the_shadow_sink(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """A reload hands the new table to the shadow sink too (its global shadow settings change)."""
    from proxy.ops.serve import apply_table, open_shadow

    path = tmp_path / "routes.yaml"
    path.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
    table, raw = read_routes(str(path))
    env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix}
    async with open_shadow(table, env) as sink:
        assert sink is not None
        gateway = Gateway(table, shadow=sink)
        state = AdminState(table, str(path), local_registry(RequestStats()))
        reloader = Reloader(str(path), state, lambda t, _raw: apply_table(gateway, t), raw)
        text = routes_text("http://127.0.0.1:1", "http://127.0.0.1:2") + "shadow: {timeout: 2.5}\n"
        write_atomically(path, text)
        assert reloader.reload("SIGHUP") is True
        assert sink.settings.timeout == 2.5
        assert sink.settings == gateway.table.shadow_settings
        gateway.close()


def test_reload_logs_the_routes_that_start_a_new_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flip of one route logs that route (and what changed) as starting a new comparison epoch; the
    routes that did not change are not named."""
    path = tmp_path / "routes.yaml"
    path.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "legacy"))
    reloader, gateway, _ = make_reloader(path)
    write_atomically(path, routes_text("http://127.0.0.1:1", "http://127.0.0.1:2", "new"))
    with caplog.at_level(logging.INFO, logger="strangler"):
        assert reloader.reload("SIGHUP") is True
    lines = [r.getMessage() for r in caplog.records if "starts a new comparison epoch" in r.getMessage()]
    assert lines == ["route items starts a new comparison epoch (target legacy -> new)"]
    gateway.close()
