"""Graceful shutdown of a real gateway process on SIGTERM: drain, refuse, 503, exit 0 within bounds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from support.opshelp import GatewayProcess, Upstream, routes_text, start_gateway, upstream
from support.waiting import eventually


async def refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def drain_scenario(gw: GatewayProcess, legacy: Upstream, hold: asyncio.Event) -> None:
    """Slow request in flight (held until ``hold`` is set) + an idle keep-alive connection, then SIGTERM;
    check every promise."""
    host, port = gw.listen.rsplit(":", 1)
    async with aiohttp.ClientSession() as session:
        # An idle keep-alive connection: one request answered, then nothing.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        lengths = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
        length = int(lengths[0].split(b":")[1])
        await reader.readexactly(length)

        slow = asyncio.create_task(session.get(gw.url + "/slow"))
        await eventually(lambda: legacy.hits >= 2, what="the slow request upstream", last=lambda: legacy.hits)
        mark = len(gw.lines)
        gw.signal(signal.SIGTERM)
        await gw.wait_for("draining", after=mark)

        ready = await session.get(gw.admin_url + "/readyz")
        assert ready.status == 503
        assert (await ready.json())["draining"] is True
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the idle connection was closed
        writer.close()
        # The supervisor's workers close their copies of the socket a moment apart.
        await eventually(lambda: refused(gw.listen), what="new connections refused")
        assert not slow.done(), "the slow request should still be in flight"
        hold.set()  # the slow request may finish now: the drain has waited for it
        resp = await asyncio.wait_for(slow, 10)
        assert resp.status == 200
        assert (await resp.json())["backend"] == "legacy"
    # Exiting at all (exit 0, after the slow request's 200) is the promise; the per-test timeout is the
    # hang guard, and how long a loaded machine takes is not asserted.
    code = await gw.proc.wait()
    assert code == 0, "\n".join(gw.raw[-30:])


async def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM mid-request: /readyz 503, idle connections closed, new ones refused, the request gets 200."""
    hold = asyncio.Event()
    async with upstream("legacy", hold=hold) as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path)
        try:
            await drain_scenario(gw, leg, hold)
        finally:
            hold.set()
            await gw.stop()
        assert any(line.get("msg") == "drained" and line["all_finished"] for line in gw.lines)


@pytest.mark.slow
async def test_sigterm_with_workers_drains_through_the_supervisor(tmp_path: Path) -> None:
    """With --workers 2 the parent forwards SIGTERM, serves 503 on /readyz, and exits 0 once drained."""
    hold = asyncio.Event()
    async with upstream("legacy", hold=hold) as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path, "--workers", "2")
        try:
            await drain_scenario(gw, leg, hold)
        finally:
            hold.set()
            await gw.stop()
        assert [line["code"] for line in gw.lines if line.get("msg") == "worker exited"] == [0, 0]


async def test_drain_timeout_bounds_a_request_that_takes_too_long(tmp_path: Path) -> None:
    """A request outliving --drain-timeout is cut off and the process still exits 0 without waiting for it."""
    hold = asyncio.Event()  # never set before the exit: the request outlives any drain deadline
    async with upstream("legacy", hold=hold) as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        gw = await start_gateway(path, "--drain-timeout", "0.5")
        try:
            async with aiohttp.ClientSession() as session:
                slow = asyncio.create_task(session.get(gw.url + "/slow"))
                await eventually(lambda: leg.hits >= 1, what="the slow request upstream")
                gw.signal(signal.SIGTERM)
                # A drain that waited for the held request would never end (the per-test timeout);
                # one that let it finish would answer it: the ClientError and all_finished say no.
                assert await gw.proc.wait() == 0
                with pytest.raises(aiohttp.ClientError):
                    await asyncio.wait_for(slow, 5)
        finally:
            hold.set()
            await gw.stop()
        assert any(line.get("msg") == "drained" and not line["all_finished"] for line in gw.lines)
