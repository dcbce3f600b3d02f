"""--workers N: a supervisor and N real worker processes sharing the port, reloads and metrics summed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.opshelp import (
    INVALID_ROUTES,
    GatewayProcess,
    routes_text,
    start_gateway,
    upstream,
    write_atomically,
)
from support.waiting import eventually

pytestmark = pytest.mark.slow


async def spread_requests(gw: GatewayProcess, path: str, rounds: int = 10, per_round: int = 40) -> int:
    """Send rounds of concurrent requests on fresh connections until two workers have served some."""
    sent = 0
    connector = aiohttp.TCPConnector(force_close=True, limit=per_round)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(rounds):

            async def one() -> None:
                async with session.get(gw.url + path) as resp:
                    assert resp.status == 200
                    await resp.read()

            await asyncio.gather(*(one() for _ in range(per_round)))
            sent += per_round
            await eventually(
                lambda sent=sent: sum(served_by(gw).values()) >= sent,
                what=f"{sent} access lines",
                last=lambda: served_by(gw),
            )
            if len(served_by(gw)) >= 2:
                break
    return sent


def served_by(gw: GatewayProcess) -> Counter[int]:
    return Counter(line["pid"] for line in gw.lines if line.get("logger") == "strangler.access")


async def metric(gw: GatewayProcess, pattern: str, want: float) -> float:
    """Poll /metrics (bounded) until the sample matching ``pattern`` equals ``want``; return it."""
    seen: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def sample() -> bool:
            text = await (await session.get(gw.admin_url + "/metrics")).text()
            found = re.search(pattern + r" ([0-9.e+]+)", text)
            seen.append(float(found.group(1)) if found else -1.0)
            return seen[-1] == want

        await eventually(sample, what=f"{pattern} == {want}", last=lambda: seen[-1])
    return seen[-1]


async def test_metrics_add_up_across_workers_and_sighup_reaches_each(tmp_path: Path) -> None:
    """Two workers both serve; /metrics on the parent shows their sum; a SIGHUP reload reaches both."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path, "--workers", "2", "--reload-interval", "600")
        try:
            sent = await spread_requests(gw, "/items/1")  # returns once every access line arrived
            per_worker = served_by(gw)
            assert len(per_worker) == 2, f"only one worker served {sent} requests: {per_worker}"
            assert sum(per_worker.values()) == sent
            series = r'strangler_requests_total\{route="items",status="200",target="legacy"\}'
            assert await metric(gw, series, sent) == sent
            count = r'strangler_request_duration_seconds_count\{route="items",target="legacy"\}'
            assert await metric(gw, count, sent) == sent

            write_atomically(path, routes_text(leg.url, new.url, "new"))
            mark = len(gw.lines)
            gw.signal(signal.SIGHUP)

            def reloaded() -> set[int]:
                lines = gw.lines[mark:]
                return {line["pid"] for line in lines if line.get("msg") == "worker routes reloaded"}

            await eventually(lambda: len(reloaded()) == 2, what="both workers reloaded", last=reloaded)
            assert reloaded() == set(per_worker)
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(20):
                    async with session.get(gw.url + "/items/2") as resp:
                        assert (await resp.json())["backend"] == "new"
            assert await metric(gw, r'strangler_reload_total\{result="success"\}', 1.0) == 1.0
        finally:
            assert await gw.stop() == 0


async def test_a_crashed_worker_is_restarted(tmp_path: Path) -> None:
    """A worker killed with SIGKILL is replaced; service and readiness recover; its counts are kept."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path, "--workers", "2")
        try:
            sent = await spread_requests(gw, "/items/1", rounds=1, per_round=20)
            series = r'strangler_requests_total\{route="items",status="200",target="legacy"\}'
            assert await metric(gw, series, sent) == sent  # every worker has flushed its counts
            victim = next(line["worker_pid"] for line in gw.lines if line.get("msg") == "worker started")
            mark = len(gw.lines)
            os.kill(victim, signal.SIGKILL)
            died = await gw.wait_for("worker died; restarting", after=mark)
            assert died["worker_pid"] == victim
            restarted = await gw.wait_for("worker started", after=mark)
            assert restarted["worker_pid"] != victim
            async with aiohttp.ClientSession() as session:
                readyz: list[tuple[int, Any]] = []

                async def ready() -> bool:
                    resp = await session.get(gw.admin_url + "/readyz")
                    readyz.append((resp.status, await resp.json()))
                    return resp.status == 200 and readyz[-1][1]["workers"]["alive"] == 2

                await eventually(ready, what="ready with two workers alive", last=lambda: readyz[-1])
                assert readyz[-1][1]["workers"] == {"configured": 2, "alive": 2}
                for _ in range(10):
                    async with session.get(gw.url + "/items/3") as resp:
                        assert resp.status == 200
            # The dead worker's last flushed counts still count: counters never go backwards.
            assert await metric(gw, series, sent + 10) == sent + 10
        finally:
            assert await gw.stop() == 0


async def test_reloads_under_load_with_workers_lose_no_request(tmp_path: Path) -> None:
    """With two workers, 1500+ requests across reload flips (one invalid) all succeed; the last table wins."""
    async with upstream("legacy") as leg, upstream("new") as new:
        texts = {t: routes_text(leg.url, new.url, t) for t in ("legacy", "new")}
        path = tmp_path / "routes.yaml"
        path.write_text(texts["legacy"])
        gw = await start_gateway(path, "--workers", "2", "--reload-interval", "0.1", "--no-access-log")
        got: Counter[str] = Counter()
        errors: list[str] = []
        flipping = True

        def worker_reloads() -> int:
            return sum(line.get("msg") == "worker routes reloaded" for line in gw.lines)

        async def some_load() -> None:
            """Until 150 more requests were answered: load on the table in force."""
            want = sum(got.values()) + len(errors) + 150
            await eventually(lambda: sum(got.values()) + len(errors) >= want, what="150 more requests")

        async def flipper() -> None:
            nonlocal flipping
            valid = 0
            for target in ("new", "legacy", "invalid", "new"):
                await some_load()
                mark = len(gw.lines)
                write_atomically(path, INVALID_ROUTES if target == "invalid" else texts[target])
                valid += target != "invalid"

                def outcomes(mark: int = mark) -> set[Any]:
                    return {line.get("msg") for line in gw.lines[mark:]}

                await eventually(  # until the parent applied (or refused) it
                    lambda: outcomes() & {"routes reloaded", "routes reload failed"},
                    what=f"the reload to {target}",
                    last=outcomes,
                )
            await eventually(lambda: worker_reloads() == 2 * valid, what="both workers on the final table")
            await some_load()
            flipping = False

        async def client(session: aiohttp.ClientSession) -> None:
            while (flipping or sum(got.values()) < 1500) and sum(got.values()) + len(errors) < 8000:
                try:
                    async with session.get(gw.url + "/items/1") as resp:
                        body = await resp.json()
                        if resp.status == 200:
                            got[body["backend"]] += 1
                        else:
                            errors.append(f"{resp.status}: {body}")
                except (aiohttp.ClientError, ValueError) as exc:
                    errors.append(repr(exc))

        try:
            async with asyncio.timeout(40):
                connector = aiohttp.TCPConnector(limit=24, force_close=True)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await asyncio.gather(flipper(), *(client(session) for _ in range(16)))
                    final: Counter[str] = Counter()
                    for _ in range(40):
                        async with session.get(gw.url + "/items/2") as resp:
                            final[(await resp.json())["backend"]] += 1
        finally:
            assert await gw.stop() == 0
        assert errors == []
        assert sum(got.values()) >= 1500
        assert set(got) == {"legacy", "new"}
        assert final == Counter({"new": 40})
        assert len([line for line in gw.lines if line.get("msg") == "worker routes reloaded"]) == 2 * 3
