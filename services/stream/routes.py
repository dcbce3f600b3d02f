"""The post event stream (server-sent events), the WebSocket, and their gauges (docs/API.md, Events).

Both push the events of :mod:`services.stream.hub`. A client that stops reading is dropped after
``WS_SEND_TIMEOUT_S`` (a write that cannot complete) or when its queue overflows; a WebSocket is pinged
every ``WS_PING_S`` seconds on a fixed schedule (as the legacy app's ``ws`` heartbeat: aiohttp's own
heartbeat counts from the last pong, so under load its pings drift late) and dropped as dead when a ping
finds the previous one unanswered; an event stream whose client went away is found by the next heartbeat
write. Every drop ends the handler, which unsubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from services import errors
from services.context import Ctx, json_response
from services.logs import REQUEST_ID
from services.stream.hub import Event, EventKey, Hub, parse_id

HUB = web.AppKey("stream_hub", Hub)
SSE_TYPE = "text/event-stream; charset=utf-8"
RETRY = b"retry: 2000\n\n"
HEARTBEAT = b": heartbeat\n\n"
_BATCH = 64


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _write(request: web.Request, resp: web.StreamResponse, data: bytes, hub: Hub, limit_s: int) -> None:
    try:
        async with asyncio.timeout(limit_s):
            await resp.write(data)
    except TimeoutError:
        hub.gauges.slow_dropped += 1
        _abort(request)
        raise ConnectionResetError("client stopped reading") from None


async def stream(ctx: Ctx) -> web.StreamResponse:
    """GET /api/v1/posts/stream: history after ``Last-Event-ID`` (if given), then live events."""
    request, hub, settings = ctx.request, ctx.request.app[HUB], ctx.settings
    resp = web.StreamResponse(status=200)
    resp.headers["Content-Type"] = SSE_TYPE
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"  # nginx-style proxies: do not buffer the stream
    resp.headers["X-Request-Id"] = REQUEST_ID.get() or ""
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    sub = hub.subscribe()  # before the history read, so nothing falls between the two
    hub.gauges.sse_open += 1
    timeout = settings.ws_send_timeout_s
    try:
        await _write(request, resp, RETRY, hub, timeout)
        last: EventKey | None = parse_id(request.headers.get("Last-Event-ID"))
        if last is not None:
            async for event in hub.history(last):
                await _write(request, resp, event.sse, hub, timeout)
                last = event.key
        loop = asyncio.get_running_loop()
        beat_at = loop.time() + settings.stream_heartbeat_s
        while True:
            try:  # a heartbeat on a fixed schedule, events or not (as the legacy app's setInterval)
                async with asyncio.timeout_at(beat_at):
                    item = await sub.queue.get()
            except TimeoutError:
                await _write(request, resp, HEARTBEAT, hub, timeout)
                beat_at = max(beat_at + settings.stream_heartbeat_s, loop.time())
                continue
            # Whatever else is queued goes out in the same write: one syscall for a burst of events.
            batch: list[bytes] = []
            while item is not None:
                if last is None or item.key > last:  # else already sent from the history
                    batch.append(item.sse)
                    last = item.key
                if sub.queue.empty() or len(batch) >= _BATCH:
                    break
                item = sub.queue.get_nowait()
            if batch:
                await _write(request, resp, b"".join(batch), hub, timeout)
            if item is None:
                if sub.overflowed:
                    hub.gauges.slow_dropped += 1
                break
    except ConnectionError:
        pass  # the client went away (or was dropped): nothing more to say
    finally:
        hub.unsubscribe(sub)
        hub.gauges.sse_open -= 1
    return resp


async def _pump(ws: web.WebSocketResponse, request: web.Request, hub: Hub, queue: asyncio.Queue[Event | None],
                limit_s: int) -> None:
    while (item := await queue.get()) is not None:
        try:
            async with asyncio.timeout(limit_s):
                await ws.send_str(item.ws)
        except TimeoutError:
            hub.gauges.slow_dropped += 1
            _abort(request)
            return
        except ConnectionError:
            return
    await ws.close(code=1001, message=b"going away")


class _Pinged:
    """Whether the socket's last ping is still waiting for its pong."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = False


async def _ping(
    ws: web.WebSocketResponse, request: web.Request, hub: Hub, every_s: int, pinged: _Pinged
) -> None:
    loop = asyncio.get_running_loop()
    ping_at = loop.time() + every_s
    while not ws.closed:
        await asyncio.sleep(max(0.0, ping_at - loop.time()))
        if pinged.waiting:  # the previous ping was never answered: a dead peer
            hub.gauges.dead_dropped += 1
            _abort(request)
            return
        pinged.waiting = True
        with contextlib.suppress(ConnectionError):
            await ws.ping()
        ping_at = max(ping_at + every_s, loop.time())  # a fixed schedule; never a burst after a stall


async def socket(ctx: Ctx) -> web.StreamResponse:
    """GET /api/v1/ws: authenticated like the rest of the API (401 before the upgrade), then events."""
    await ctx.principal()
    request, hub, settings = ctx.request, ctx.request.app[HUB], ctx.settings
    ws = web.WebSocketResponse(autoping=False, max_msg_size=4096, timeout=2.0)
    if not ws.can_prepare(request).ok:
        raise errors.UpgradeRequired()
    ws.headers["X-Request-Id"] = REQUEST_ID.get() or ""
    await ws.prepare(request)
    sub = hub.subscribe()
    hub.gauges.ws_open += 1
    loop = asyncio.get_running_loop()
    pump = loop.create_task(_pump(ws, request, hub, sub.queue, settings.ws_send_timeout_s))
    pinged = _Pinged()
    pinger = loop.create_task(_ping(ws, request, hub, settings.ws_ping_s, pinged))
    try:
        async for msg in ws:  # clients have nothing to say but pings and pongs
            if msg.type == WSMsgType.PONG:
                pinged.waiting = False
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
    finally:
        for task in (pump, pinger):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        hub.unsubscribe(sub)
        hub.gauges.ws_open -= 1
        if sub.overflowed:
            hub.gauges.slow_dropped += 1
    return ws


async def gauges(ctx: Ctx) -> web.Response:
    """GET /health/streams: the open streams and sockets of this process and the clients it dropped."""
    g = ctx.request.app[HUB].gauges
    body = {"sse_open": g.sse_open, "ws_open": g.ws_open, "slow_dropped": g.slow_dropped,
            "dead_dropped": g.dead_dropped}  # fmt: skip
    return json_response(200, body)


ROUTES = (
    ("GET", "/api/v1/posts/stream", stream),
    ("GET", "/api/v1/ws", socket),
    ("GET", "/health/streams", gauges),
)
