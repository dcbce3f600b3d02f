"""What shadowing cannot compare, through the real data path: event streams and WebSockets are never
copied, writes after a flip are not compared, and a shadow side that stops answering warns per route
every few seconds (on the injected clock) instead of per request. Each ends as COMPARISON UNAVAILABLE."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from support.memstore import MemoryStore
from support.waiting import eventually

from proxy.devstack.embedded import free_port
from proxy.report.model import NOT_ENOUGH, UNANSWERED_MIN, UNAVAILABLE, build_report
from proxy.shadow.unanswered import WARN_EVERY_S, Unanswered

from .shadow_rig import Backend, Rig, RigFactory, routes_text

SHADOWED = "  - {name: %s, match: {methods: [%s], path: %s}, target: %s, shadow: {sample: 1.0%s}}\n"


async def _verdict(rig: Rig, route: str) -> tuple[str, list[str]]:
    await rig.shadower.drain()
    rr = build_report(await rig.store.stats(), rig.table).route(route)
    assert rr is not None
    return rr.verdict, rr.reasons


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set at the end of the test: lets never-ending upstream handlers return."""
    event = asyncio.Event()
    yield event
    event.set()


async def test_event_stream_is_never_shadowed(
    make_rig: RigFactory, backends: tuple[Backend, Backend], release: asyncio.Event
) -> None:
    """An SSE response drops its copy at the head: no shadow request, counted as a stream while it is
    still open, and the client gets every event; the report says COMPARISON UNAVAILABLE (stream)."""
    legacy, new = backends

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"id: %d\ndata: event %d\n\n" % (i, i))
        await release.wait()  # a stream does not end by itself
        return resp

    legacy.handler = new.handler = events
    rig = await make_rig(routes_text(legacy, new, SHADOWED % ("stream", "GET", "/stream", "legacy", "")))
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{rig.port}/stream") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        got = [await resp.content.readline() for _ in range(9)]
        data = [line for line in got if line.startswith(b"data:")]
        assert data == [b"data: event %d\n" % i for i in range(3)]

        async def counted() -> int:
            await rig.store.flush()
            return (await rig.store.stats())["stream"].get("unavailable_stream")

        assert await eventually(counted, what="the open stream counted as not comparable") == 1
        verdict, reasons = await _verdict(rig, "stream")
        assert verdict == UNAVAILABLE
        assert reasons == ["stream: responses are event streams / WebSockets, not compared"]
    await rig.shadower.drain()
    assert new.seen == []  # the gateway never opened a shadow stream
    assert (await rig.store.stats())["stream"].get("sampled") == 0


async def test_websocket_is_never_shadowed(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """A WebSocket upgrade is never copied: no shadow request, the socket works through the gateway, and
    the report says COMPARISON UNAVAILABLE (stream)."""
    legacy, new = backends

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo " + msg.data)
        return ws

    legacy.handler = new.handler = echo
    rig = await make_rig(routes_text(legacy, new, SHADOWED % ("ws", "GET", "/ws", "legacy", "")))
    url = f"http://127.0.0.1:{rig.port}/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "echo hello"
    await rig.shadower.drain()
    assert new.seen == [] and len(legacy.seen) == 1

    async def counted() -> int:
        await rig.store.flush()
        return (await rig.store.stats())["ws"].get("unavailable_websocket")

    assert await eventually(counted, what="the socket counted as not comparable") == 1
    assert await _verdict(rig, "ws") == (
        UNAVAILABLE, ["stream: responses are event streams / WebSockets, not compared"]
    )  # fmt: skip


async def test_write_route_after_flip_is_unavailable(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A write route after its flip (served by new; `report --suggest` sets writes: false) is COMPARISON
    UNAVAILABLE (legacy has no dry run), not silently NOT ENOUGH DATA; legacy never gets the write."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, SHADOWED % ("w", "POST", "/w", "new", ", writes: false")))
    for _ in range(3):
        assert (await rig.request("POST", "/w", data=b"{}"))[0] == 200
    verdict, reasons = await _verdict(rig, "w")
    assert verdict == UNAVAILABLE
    assert reasons == [
        "writes: the route is served by new and legacy has no dry run, so writes are not compared"
    ]
    st = (await rig.store.stats())["w"]
    assert (st.get("seen"), st.get("unavailable_write")) == (3, 3)
    assert legacy.seen == [] and len(new.seen) == 3


def _failures(route: str, kind: str) -> float:  # strangler_shadow_failures_total of the new side
    labels = {"route": route, "side": "new", "kind": kind}
    return REGISTRY.get_sample_value("strangler_shadow_failures_total", labels) or 0.0


async def test_dead_shadow_warns_per_clock_window_and_is_unavailable(
    make_rig: RigFactory, backends: tuple[Backend, Backend], caplog: pytest.LogCaptureFixture
) -> None:
    """A shadow side that refuses every call: one warning line per route per WARN_EVERY_S of the injected
    clock (not one per request), a failure metric per call, COMPARISON UNAVAILABLE naming the side and
    the error; once it answers again the streak ends and the verdict is back to the usual ones."""
    legacy, _ = backends
    dead = Backend("new", port=free_port())  # never started: every shadow call is refused
    now = [1000.0]
    rig = await make_rig(routes_text(legacy, dead, SHADOWED % ("dead", "GET", "/dead", "legacy", "")),
                         clock=lambda: now[0])  # fmt: skip
    before = _failures("dead", "connect")

    def warnings() -> int:
        lines = caplog.records
        return sum(1 for r in lines if r.levelno == logging.WARNING and "route dead" in r.getMessage())

    with caplog.at_level(logging.INFO, logger="strangler.shadow"):
        for _ in range(20):
            assert (await rig.get("/dead"))[0] == 200
        await rig.shadower.drain()
        assert warnings() == 1  # 20 failures in one window: one line
        assert _failures("dead", "connect") == before + 20
        now[0] += WARN_EVERY_S / 2
        for _ in range(5):
            assert (await rig.get("/dead"))[0] == 200
        await rig.shadower.drain()
        assert warnings() == 1  # still inside the window
        now[0] += WARN_EVERY_S / 2
        assert (await rig.get("/dead"))[0] == 200
        await rig.shadower.drain()
        assert warnings() == 2  # the next window: one more line, counting what it did not log
        assert "25 shadow calls failed" in next(
            r.getMessage() for r in reversed(caplog.records) if r.levelno == logging.WARNING
        )
        assert sum(1 for r in caplog.records if "shadow call failed" in r.getMessage()) == 0

        verdict, reasons = await _verdict(rig, "dead")
        assert verdict == UNAVAILABLE and len(reasons) == 1
        assert reasons[0].startswith("the shadow side (new) did not answer: connection refused or reset")
        assert "the last 26 shadow calls failed" in reasons[0] and 26 >= UNANSWERED_MIN

        # The shadow side comes back on its port: its streak ends, and a comparison is made again.
        runner = web.AppRunner(_app(), access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", dead.port).start()
        try:
            assert (await rig.get("/dead"))[0] == 200
            await rig.shadower.drain()
            st = (await rig.store.stats())["dead"]
            assert st.get("unanswered:new:connect") == 0 and st.get("matched") == 1
            assert (await _verdict(rig, "dead"))[0] == NOT_ENOUGH
            assert any("answers again" in r.getMessage() for r in caplog.records)
        finally:
            await runner.cleanup()


def _app() -> web.Application:
    async def alice(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "name": "Alice"})

    app = web.Application()
    app.router.add_get("/dead", alice)
    return app


async def test_streak_is_taken_back_when_answered_or_closed() -> None:
    """The stored streak adds up failures of the current run only: an answer or a close takes it back to
    0 (so a restarted or recovered side is not reported as silent); the metric keeps every failure."""
    store = MemoryStore()
    book = Unanswered(store, clock=lambda: 0.0)
    before = _failures("r", "timeout")
    for reason in ("timeout: no answer in 2 s", "timeout: no answer in 2 s", "connect: refused"):
        book.failed("r", "new", reason)
    book.failed("s", "new", "no upstream named 'new'")
    await store.flush()
    counters = (await store.stats())["r"].counters
    assert (counters["unanswered:new:timeout"], counters["unanswered:new:connect"]) == (2, 1)
    book.answered("r")
    book.answered("unknown")
    book.forget()  # the shadower closes: s's streak goes too
    await store.flush()
    stats = await store.stats()
    assert stats["r"].get("unanswered:new:timeout") == stats["r"].get("unanswered:new:connect") == 0
    assert stats["s"].get("unanswered:new:error") == 0
    assert _failures("r", "timeout") == before + 2
