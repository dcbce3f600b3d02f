"""The post event stream and the WebSocket, against both services (docs/API.md, Events).

A stack of its own (both services, one database, one Redis prefix) with short heartbeat, ping and send
timeouts, so heartbeats and drops happen within a test; every wait is for an event, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from contract_kit import UNAUTHORIZED, Account, Api, compact, signed
from contract_stack import SERVICES
from stream_kit import SseClient, StreamStack, gauges, publish, raw_ws, wait_gauges

ID_RE = re.compile(r"[0-9]+-[0-9]+")
UPGRADE_REQUIRED = b'{"error":{"code":"upgrade_required","message":"this endpoint only speaks WebSocket"}}'


@dataclass
class Side:
    """One running service of the stream stack: its name, port, client and a user registered on it."""

    name: str
    port: int
    api: Api
    user: Account

    @property
    def base_url(self) -> str:
        return self.api.base_url


@pytest.fixture(scope="module")
def sstack(make_database: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[StreamStack]:
    """Both services with short stream timers, stopped (and checked to stop on SIGTERM) at the end."""
    st = StreamStack(database_url=make_database(), redis_url=redis_url,
                     log_dir=tmp_path_factory.mktemp("stream"))  # fmt: skip
    try:
        yield st
    finally:
        problems = st.close()
        assert not problems, problems


def _side(st: StreamStack, name: str) -> Side:
    api = st.api(name)
    return Side(name, st.running[name].port, api, api.register(name=f"Streamer {name}"))


@pytest.fixture(params=SERVICES)
def side(request: pytest.FixtureRequest, sstack: StreamStack) -> Iterator[Side]:
    """The service under test."""
    s = _side(sstack, request.param)
    yield s
    s.api.close()


@pytest.fixture(params=[("legacy", "new"), ("new", "legacy")], ids=["legacy-to-new", "new-to-legacy"])
def pair(request: pytest.FixtureRequest, sstack: StreamStack) -> Iterator[tuple[Side, Side]]:
    """(the service a post is created on, the service whose stream must deliver it)."""
    a, b = (_side(sstack, n) for n in request.param)
    yield a, b
    a.api.close()
    b.api.close()


def create(side: Side, title: str = "streamed") -> bytes:
    """Create a post on `side` and return its exact 201 body (the event's data)."""
    r = side.api.post("/api/v1/posts", json_body={"title": title, "body": "b"}, token=side.user.access_token)
    assert r.status_code == 201, r.text
    return r.content


async def open_stream(side: Side, last_event_id: str | None = None) -> SseClient:
    client = await SseClient.open(side.port, last_event_id)
    assert client.status == 200
    assert client.header("content-type") == "text/event-stream; charset=utf-8"
    assert client.header("cache-control") == "no-cache"
    first = await client.next()
    assert first.raw == b"retry: 2000"
    return client


async def test_stream_delivers_each_new_post_with_an_id(side: Side) -> None:
    """A post created after connecting arrives as `id`, `event: post`, `data: <201 body>`."""
    client = await open_stream(side)
    try:
        body = await asyncio.to_thread(create, side)
        event = await client.next_event()
        assert event.id is not None and ID_RE.fullmatch(event.id)
        assert event.raw == b"id: " + event.id.encode() + b"\nevent: post\ndata: " + body
    finally:
        await client.close()


async def test_stream_resumes_after_last_event_id(side: Side) -> None:
    """Reconnecting with Last-Event-ID replays, in order, exactly the events after it, then goes live."""
    client = await open_stream(side)
    try:
        await asyncio.to_thread(create, side, "before")
        seen = await client.next_event()
    finally:
        await client.close()
    missed = [await asyncio.to_thread(create, side, f"missed {i}") for i in range(3)]
    client = await open_stream(side, seen.id)
    try:
        got = [await client.next_event() for _ in missed]
        assert [e.data for e in got] == missed
        assert got[0].id is not None and seen.id is not None
        assert tuple(map(int, got[0].id.split("-"))) > tuple(map(int, seen.id.split("-")))
        live = await asyncio.to_thread(create, side, "live")
        assert (await client.next_event()).data == live
    finally:
        await client.close()


async def test_dry_run_post_is_not_streamed(sstack: StreamStack) -> None:
    """A post created in a (rolled-back) dry run on the new service is never published."""
    side = _side(sstack, "new")
    client = await open_stream(side)
    try:
        target = "/api/v1/posts"
        body = {"title": "dry", "body": "b"}
        r = await asyncio.to_thread(side.api.post, target, json_body=body, token=side.user.access_token,
                                    headers=signed(sstack.dry_run_secret, "POST", target, compact(body)))
        assert r.status_code == 201 and r.headers["x-strangler-dry-run"] == "applied"
        real = await asyncio.to_thread(create, side, "real")
        while (event := await client.next_event()).data != real:
            assert event.data != r.content
    finally:
        await client.close()
        side.api.close()


async def test_stream_sends_heartbeat_comments(side: Side) -> None:
    """With no post to send, a `: heartbeat` comment comes every STREAM_HEARTBEAT_S (1 s here)."""
    client = await open_stream(side)
    try:
        for _ in range(2):
            msg = await client.next(deadline=10.0)
            while msg.id is not None:  # another test's post may pass by
                msg = await client.next(deadline=10.0)
            assert msg.raw == b": heartbeat"
    finally:
        await client.close()


async def test_stream_heartbeats_keep_schedule_while_events_flow(side: Side, sstack: StreamStack) -> None:
    """Events more often than the heartbeat interval do not postpone the heartbeat (a fixed schedule)."""
    client = await open_stream(side)
    stop = asyncio.Event()

    async def publisher() -> None:
        rd = sstack.redis()
        try:
            while not stop.is_set():  # an event every 0.2 s: a pace, five per heartbeat interval
                await asyncio.to_thread(publish, rd, sstack.redis_prefix, b'{"tick":1}')
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            rd.close()

    task = asyncio.get_running_loop().create_task(publisher())
    try:
        beats = events = 0
        async with asyncio.timeout(15.0):
            while beats < 2:
                msg = await client.next()
                beats += msg.raw == b": heartbeat"
                events += msg.id is not None
        assert events > 0
    finally:
        stop.set()
        await task
        await client.close()


async def test_post_created_on_one_service_streams_from_the_other(pair: tuple[Side, Side]) -> None:
    """The feed is Redis's, not a process's: legacy's post on new's stream, and the other way round."""
    origin, server = pair
    client = await open_stream(server)
    try:
        body = await asyncio.to_thread(create, origin, f"from {origin.name}")
        event = await client.next_event()
        while event.data != body:  # a concurrent test's post may come first
            event = await client.next_event()
    finally:
        await client.close()


async def test_events_published_while_the_hub_is_away_still_arrive(side: Side, sstack: StreamStack) -> None:
    """After its pub/sub connection is killed, a process replays what it missed from the history."""
    client = await open_stream(side)
    rd = sstack.redis()
    try:
        first = await asyncio.to_thread(create, side, "before the cut")  # the hub has now seen an id
        while (await client.next_event()).data != first:
            pass
        hubs = [c["id"] for c in rd.client_list() if c.get("name") == f"{sstack.redis_prefix}stream-hub"]
        assert hubs  # one per running service process (the other service may not be started yet)
        for client_id in hubs:
            rd.client_kill_filter(_id=client_id)
        missed = [b'{"while_away":%d}' % n for n in range(3)]
        for data in missed:  # published at once, before either hub can have resubscribed
            publish(rd, sstack.redis_prefix, data)
        got = [(await client.next_event()).data for _ in missed]
        assert got == missed
    finally:
        rd.close()
        await client.close()


@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no-token", "bad-token"])
def test_socket_refuses_a_missing_or_bad_token(side: Side, token: str | None) -> None:
    """The upgrade is refused before it happens: the API's usual 401 body and WWW-Authenticate."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    r = side.api.get("/api/v1/ws", headers=headers, token=token)
    assert r.status_code == 401
    assert r.content == UNAUTHORIZED
    assert r.headers["www-authenticate"] == "Bearer"


def test_socket_without_upgrade_is_426(side: Side) -> None:
    """An authenticated plain GET of the socket's path: 426 upgrade_required."""
    r = side.api.get("/api/v1/ws", token=side.user.access_token)
    assert r.status_code == 426
    assert r.content == UPGRADE_REQUIRED
    assert r.headers["upgrade"] == "websocket"


async def test_socket_pushes_posts_and_pings(side: Side) -> None:
    """An authenticated socket receives each new post as one text message, and the server pings it."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{side.base_url}/api/v1/ws", headers=side.user.auth, autoping=False
    ) as ws:
        body = await asyncio.to_thread(create, side, "socket")
        got_post = got_ping = False
        async with asyncio.timeout(15.0):
            while not (got_post and got_ping):
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.PING:
                    got_ping = True
                    await ws.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    m = re.fullmatch(r'\{"type":"post","id":"([0-9]+-[0-9]+)","post":(.*)\}', msg.data, re.S)
                    assert m is not None, msg.data
                    if m[2].encode() == body:
                        got_post = True
                else:
                    pytest.fail(f"unexpected message {msg!r}")


async def test_socket_that_stops_reading_is_dropped(side: Side, sstack: StreamStack) -> None:
    """A client that never reads is dropped once a send cannot complete within WS_SEND_TIMEOUT_S."""
    before = await asyncio.to_thread(gauges, side.base_url)
    head, _reader, writer = await raw_ws(side.port, side.user.access_token, rcvbuf=4096, read_limit=1024)
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        await wait_gauges(side.base_url, lambda g: g["ws_open"] > before["ws_open"])
        client = sstack.redis()
        try:  # events far larger than any socket buffer: the server's sends must block
            for _ in range(4):
                big = b'{"filler":"' + b"x" * 2_000_000 + b'"}'
                await asyncio.to_thread(publish, client, sstack.redis_prefix, big)
        finally:
            client.close()
        after = await wait_gauges(side.base_url, lambda g: g["slow_dropped"] > before["slow_dropped"])
        assert after["dead_dropped"] == before["dead_dropped"]  # dropped for being slow, not for pongs
        await wait_gauges(side.base_url, lambda g: g["ws_open"] <= before["ws_open"])
    finally:
        writer.transport.abort()


async def test_socket_that_never_answers_pings_is_dropped(side: Side) -> None:
    """A peer that reads but never answers a ping is dropped as dead (it does not leak)."""
    before = await asyncio.to_thread(gauges, side.base_url)
    head, reader, writer = await raw_ws(side.port, side.user.access_token)
    drain = asyncio.get_running_loop().create_task(reader.read(-1))  # reads everything, pongs nothing
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        await wait_gauges(side.base_url, lambda g: g["dead_dropped"] > before["dead_dropped"])
        # The drop is counted before the socket's close is: wait for the open count too (it must fall back).
        await wait_gauges(side.base_url, lambda g: g["ws_open"] <= before["ws_open"])
        async with asyncio.timeout(10.0):
            await drain  # the server closed the connection
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await drain
        writer.transport.abort()


async def test_gauges_return_to_zero_after_clients_go_away(side: Side) -> None:
    """Streams and sockets whose clients vanish (connections reset) are all cleaned up."""
    before = await asyncio.to_thread(gauges, side.base_url)
    streams = [await SseClient.open(side.port) for _ in range(5)]
    sockets = [await raw_ws(side.port, side.user.access_token) for _ in range(5)]
    try:
        await wait_gauges(side.base_url, lambda g: g["sse_open"] >= before["sse_open"] + 5
                          and g["ws_open"] >= before["ws_open"] + 5)  # fmt: skip
    finally:
        for s in streams:
            s.writer.transport.abort()
        for i, (_, _, w) in enumerate(sockets):
            # A close frame (masked, as a client must) for half, a bare reset for the other half.
            if i % 2 == 0:
                w.write(b"\x88\x82" + struct.pack("!I", 0) + b"\x03\xe8")
            w.transport.abort()
    await wait_gauges(side.base_url, lambda g: g["sse_open"] <= before["sse_open"]
                      and g["ws_open"] <= before["ws_open"])  # fmt: skip
