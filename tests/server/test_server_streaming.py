"""Streaming: SSE unbuffered, WebSocket tunnelled, 100-continue, backpressure, 1 GiB with bounded memory."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from support.gwkit import RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient
from support.waiting import eventually

GIB = 1 << 30


async def read_chunk(client: RawClient) -> bytes:
    """One chunk's payload (b"" for the last chunk)."""
    size = int(await client.reader.readuntil(b"\r\n"), 16)
    return (await client.reader.readexactly(size + 2))[:-2]


async def read_events(client: RawClient, echo: EchoUpstream) -> tuple[bytes, bytes]:
    """The first chunk of /sse?hold=1 (the upstream holds the rest back), then the rest once released."""
    first = await read_chunk(client)
    assert not echo.seen.release.is_set()  # the upstream has not finished: the event was flushed alone
    echo.seen.release.set()
    rest = b""
    while chunk := await read_chunk(client):
        rest += chunk
    return first, rest


async def test_sse_first_event_arrives_before_upstream_finishes(
    gw: RunningGateway, echo: EchoUpstream
) -> None:
    """Each server-sent event is flushed as it arrives: the first comes while the upstream holds the rest."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /sse?hold=1 HTTP/1.1\r\nHost: g\r\nAccept: text/event-stream\r\n\r\n")
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    first, rest = await asyncio.wait_for(read_events(client, echo), 10)
    assert first == b"id: 0\ndata: event 0\n\n"
    assert rest == b"id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n"
    client.close()


async def test_websocket_upgrade_tunnelled(gw: RunningGateway) -> None:
    """A WebSocket upgrade gets the upstream's 101 and then frames pass both ways."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{gw.port}/ws") as socket:
            await socket.send_str("hello")
            assert await socket.receive_str(timeout=5) == "echo:hello"
            payload = os.urandom(100_000)
            await socket.send_bytes(payload)
            assert await socket.receive_bytes(timeout=5) == payload
        assert socket.closed


async def test_websocket_refused_upgrade_is_plain_response(gw: RunningGateway) -> None:
    """An upgrade the upstream answers without 101 is an ordinary response, then the connection closes."""
    client = await RawClient.open(gw.port)
    response = await client.request(
        "GET",
        "/not-a-socket",
        {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
         "Sec-WebSocket-Version": "13"},
    )
    assert response.status == 200
    echoed = response.json()
    names = {str(k).lower() for k, _ in echoed["headers"]}  # type: ignore[attr-defined]
    assert "upgrade" in names and "sec-websocket-key" in names
    assert await client.at_eof()
    client.close()


async def test_expect_100_continue(gw: RunningGateway) -> None:
    """Expect: 100-continue: the upstream's 100 Continue reaches the client before it sends the body."""
    client = await RawClient.open(gw.port)
    await client.send(
        b"POST /upload HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    await client.send(b"hello")
    response = await client.response()
    assert response.status == 200 and response.json()["body_len"] == 5
    client.close()


async def test_slow_client_slows_upstream_reading(gw: RunningGateway, echo: EchoUpstream) -> None:
    """A client that stops reading makes the gateway stop reading the upstream (bounded buffering)."""
    total = 256 << 20
    client = await RawClient.open(gw.port)
    await client.send(b"GET /download?n=%d HTTP/1.1\r\nHost: g\r\n\r\n" % total)
    pool = gw.gateway.pools["legacy"]

    def paused() -> bool:  # the client stalls: buffers fill and the gateway stops reading the upstream
        return any(c.transport is not None and not c.transport.is_reading() for c in pool.active)

    await eventually(paused, what="the gateway pausing its upstream reads")
    sent = echo.seen.requests[-1]["sent"]
    assert isinstance(sent, int) and sent < 64 << 20, f"upstream wrote {sent} bytes to a stalled client"
    received = 0
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    while True:  # chunked: count payload bytes
        size = int(await client.reader.readuntil(b"\r\n"), 16)
        if size == 0:
            break
        received += len(await client.reader.readexactly(size))
        await client.reader.readexactly(2)
    assert received == total
    client.close()


GATEWAY_SCRIPT = """
import asyncio, sys, uvloop
from proxy.server.gateway import Gateway
from proxy.routing.table import parse_routes
from proxy.server.listener import start_server

async def main():
    server = await start_server(Gateway(parse_routes(sys.stdin.read(), "test.yaml")))
    print(server.port, flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def rss_kib(pid: int, field: str) -> int:
    """A memory figure (VmRSS, VmHWM) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not found")


@pytest.fixture
async def gateway_process(echo: EchoUpstream) -> AsyncIterator[tuple[int, int]]:
    """The gateway in its own process (port, pid), so its memory can be measured alone."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", GATEWAY_SCRIPT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(routes_yaml(echo.port, echo.port).encode())
    process.stdin.close()
    port = int(await asyncio.wait_for(process.stdout.readline(), 20))
    yield port, process.pid
    process.terminate()
    await process.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_one_gib_download_bounded_memory(gateway_process: tuple[int, int]) -> None:
    """A 1 GiB response streams through with the gateway's peak RSS growing by less than 64 MiB."""
    port, pid = gateway_process
    client = await RawClient.open(port)
    assert (await client.request("GET", "/warm")).status == 200
    before = rss_kib(pid, "VmRSS")
    await client.send(b"GET /download?n=%d&cl=1 HTTP/1.1\r\nHost: g\r\n\r\n" % GIB)
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert b"Content-Length: %d" % GIB in head
    received = 0
    while received < GIB:
        received += len(await client.reader.read(1 << 20))
    assert received == GIB
    growth = rss_kib(pid, "VmHWM") - before
    assert growth < 64 * 1024, f"gateway peak RSS grew by {growth} KiB"
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_one_gib_upload_bounded_memory(gateway_process: tuple[int, int]) -> None:
    """A 1 GiB request body streams to the upstream with the gateway's peak RSS growing < 64 MiB."""
    port, pid = gateway_process
    client = await RawClient.open(port)
    assert (await client.request("GET", "/warm")).status == 200
    before = rss_kib(pid, "VmRSS")
    await client.send(b"POST /upload?nohash=1 HTTP/1.1\r\nHost: g\r\nContent-Length: %d\r\n\r\n" % GIB)
    block = os.urandom(1 << 20)
    for _ in range(GIB // len(block)):
        client.writer.write(block)
        await client.writer.drain()
    response = await client.response()
    assert response.status == 200 and json.loads(response.body)["body_len"] == GIB
    growth = rss_kib(pid, "VmHWM") - before
    assert growth < 64 * 1024, f"gateway peak RSS grew by {growth} KiB"
    client.close()


async def test_under_uvloop_process(gateway_process: tuple[int, int], echo: EchoUpstream) -> None:
    """In its own uvloop process (as in production): keep-alive GET, POST bytes, WebSocket, SSE."""
    port, _ = gateway_process
    client = await RawClient.open(port)
    for _ in range(3):
        assert (await client.request("GET", "/x")).status == 200
    body = os.urandom(200_000)
    # ?cl=1: the mirror reads the whole body before it answers. The streaming mirror answers while the body
    # is still arriving, and a response that starts before the request body is read ends the connection
    # (the gateway's rule), so keep-alive after it would depend on timing.
    posted = await client.request("POST", "/mirror?cl=1", body=body)
    assert posted.body == body and posted.header("connection") != "close"
    await client.send(b"GET /sse?hold=1 HTTP/1.1\r\nHost: g\r\n\r\n")
    await client.reader.readuntil(b"\r\n\r\n")
    first, rest = await asyncio.wait_for(read_events(client, echo), 10)
    assert first.startswith(b"id: 0") and rest.startswith(b"id: 1")
    client.close()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as socket:
            await socket.send_str("uv")
            assert await socket.receive_str(timeout=5) == "echo:uv"


async def test_drain_waits_for_open_websocket_until_it_closes(gw: RunningGateway) -> None:
    """A drain counts an open WebSocket tunnel as in flight: it ends when the client closes it."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{gw.port}/ws") as socket:
            assert gw.server.tunnels == 1
            drain = asyncio.create_task(gw.server.drain(10.0))
            await eventually(lambda: gw.server.draining, what="the drain to start")
            # A round trip through the tunnel while draining: it still works, and the drain waits for it.
            await socket.send_str("still here")
            assert await socket.receive_str(timeout=5) == "echo:still here"
            assert not drain.done()
        assert await asyncio.wait_for(drain, 5) is True
    assert gw.server.tunnels == 0


async def test_drain_deadline_closes_open_websocket(gw: RunningGateway) -> None:
    """A WebSocket still open at the drain deadline is closed, and the drain reports it did not finish."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{gw.port}/ws") as socket:
            # A drain that ignored its deadline would wait for this tunnel forever: the per-test
            # timeout catches that; how long past the deadline it takes is not a functional property.
            assert await gw.server.drain(0.3) is False
            msg = await socket.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
