"""Upstream failures: 502 for refused connections, 504 for timeouts, idempotent-only retry, truncation."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest
from support.clock import ManualClock
from support.gwkit import GatewayFactory, routes_yaml
from support.upstreams import Handler, RawClient, RawUpstream, read_request
from support.waiting import eventually, eventually_sync

StartRaw = Callable[[Handler], Awaitable[RawUpstream]]


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang in SYN-SENT (a connect timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)

    def queued() -> list[socket.socket]:  # a completed non-blocking connect is writable, without error
        writable = select.select([], fillers, [], 0)[1]
        return [f for f in writable if f.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]

    eventually_sync(queued, what="a filler connection in the accept queue")
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


async def test_dead_port_502_quickly(make_gateway: GatewayFactory) -> None:
    """Nothing listening upstream: 502 JSON with the request id, from the refusal, not the connect timeout.

    A 502 "cannot connect" (not a 504 "took longer than 5s") shows the refusal ended the attempt;
    how quickly is measured by bench/timing.py (make bench-timing), not asserted here.
    """
    port = free_port()
    handle = await make_gateway(routes_yaml(port, port, legacy_opts=", connect_timeout: 5.0"))
    client = await RawClient.open(handle.port)
    response = await client.request("GET", "/x", {"X-Request-Id": "dead-1"})
    assert response.status == 502
    error = response.json()["error"]
    assert isinstance(error, dict)
    assert error["code"] == "bad_gateway" and error["request_id"] == "dead-1"
    assert "legacy" in str(error["message"]) and "cannot connect" in str(error["message"])
    assert response.header("X-Request-Id") == "dead-1"
    # the request was complete: the client connection stays usable
    assert (await client.request("GET", "/y")).status == 502
    client.close()


async def test_connect_timeout_504(make_gateway: GatewayFactory, full_backlog_port: int) -> None:
    """An upstream that never accepts: 504 from the route's connect_timeout (the message names it)."""
    port = full_backlog_port
    handle = await make_gateway(routes_yaml(port, port, legacy_opts=", connect_timeout: 0.3"))
    client = await RawClient.open(handle.port)
    response = await client.request("GET", "/x")
    assert response.status == 504
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "gateway_timeout"
    assert "connecting to upstream legacy" in str(error["message"])
    assert "took longer than 0.3s" in str(error["message"])  # the route's limit, not the default
    client.close()


async def test_stalling_upstream_504_near_timeout(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """An upstream that accepts but never answers: 504 once the pool's clock passes the total timeout."""
    arrived = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await asyncio.sleep(30)  # never answers; the test ends first

    upstream = await raw_upstream(stall)
    clock = ManualClock()
    handle = await make_gateway(
        routes_yaml(upstream.port, upstream.port, legacy_opts=", timeout: 0.5"), upstream_clock=clock
    )
    pool = handle.gateway.pools["legacy"]
    client = await RawClient.open(handle.port)
    answer = asyncio.ensure_future(client.request("GET", "/slow"))
    await eventually(arrived.is_set, what="the request upstream")
    (conn,) = pool.active
    clock.advance(0.45)
    pool.sweep()
    assert not conn.closed  # not before the timeout
    clock.advance(0.1)
    pool.sweep()
    response = await answer
    assert response.status == 504
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "gateway_timeout"
    assert "sent no response within 0.5s" in str(error["message"])
    client.close()


def stale_after_first(seen: list[bytes]) -> Handler:
    """Serve one keep-alive request per connection, then read the next and close without answering."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        seen.append(line)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        line, _, _ = await read_request(reader)
        seen.append(line)
        writer.transport.abort()

    return handler


async def test_get_on_stale_connection_retried_once(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """A GET whose pooled connection dies before any response byte is resent on a new connection."""
    seen: list[bytes] = []
    upstream = await raw_upstream(stale_after_first(seen))
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/warm")).status == 200
    response = await client.request("GET", "/again")
    assert response.status == 200 and response.body == b"ok"
    assert seen == [b"GET /warm HTTP/1.1", b"GET /again HTTP/1.1", b"GET /again HTTP/1.1"]
    assert upstream.connections == 2
    client.close()


@pytest.mark.parametrize("body", [b"", b"amount=1"], ids=["empty", "with-body"])
async def test_post_on_stale_connection_not_retried(
    make_gateway: GatewayFactory, raw_upstream: StartRaw, body: bytes
) -> None:
    """A POST whose pooled connection dies is never resent: the upstream sees it once; 502."""
    seen: list[bytes] = []
    upstream = await raw_upstream(stale_after_first(seen))
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/warm")).status == 200
    response = await client.request("POST", "/pay", body=body)
    assert response.status == 502
    assert seen == [b"GET /warm HTTP/1.1", b"POST /pay HTTP/1.1"]
    # The next request opens the second connection: the POST was not resent before it, nor on it.
    assert (await client.request("GET", "/after")).status == 200
    assert seen == [b"GET /warm HTTP/1.1", b"POST /pay HTTP/1.1", b"GET /after HTTP/1.1"]
    assert upstream.connections == 2
    client.close()


async def test_get_retried_only_once(make_gateway: GatewayFactory, raw_upstream: StartRaw) -> None:
    """If the retry's fresh connection also dies, the client gets a 502 (no retry loop)."""
    seen: list[bytes] = []

    async def always_die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await read_request(reader))[0])
        if len(seen) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            seen.append((await read_request(reader))[0])
        writer.transport.abort()

    upstream = await raw_upstream(always_die)
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/warm")).status == 200
    assert (await client.request("GET", "/x")).status == 502
    assert seen == [b"GET /warm HTTP/1.1", b"GET /x HTTP/1.1", b"GET /x HTTP/1.1"]
    client.close()


def head_then(after: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Handler:
    """An upstream that sends a head promising 1000 bytes and 100 of them, then does ``after``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await after(writer)

    return handler


async def assert_truncated(client: RawClient) -> None:
    """GET: a 200 head arrives, then the connection ends before the promised 1000 bytes (no fake end)."""
    await client.send(b"GET /x HTTP/1.1\r\nHost: g\r\n\r\n")
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    received = b""
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        received = await asyncio.wait_for(client.reader.readexactly(1000), 5)
    assert len(received) < 1000


async def test_upstream_dies_mid_response_client_closed(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """After the headers were sent, an upstream death closes the client connection (no fake end)."""

    async def die(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)
        writer.transport.abort()

    upstream = await raw_upstream(head_then(die))
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    await assert_truncated(client)
    client.close()


async def test_eof_delimited_upstream_body_rechunked(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """A body delimited by the upstream closing is passed on complete, chunked for HTTP/1.1."""

    async def eof_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"y" * 5000)
        await writer.drain()
        writer.close()

    upstream = await raw_upstream(eof_body)
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    response = await client.request("GET", "/x")
    assert response.status == 200 and response.chunked and response.body == b"y" * 5000
    assert (await client.request("GET", "/y")).status == 200  # the client connection survives
    client.close()


async def test_upstream_silent_mid_body_cut_near_timeout(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """An upstream that sends its head and part of the body, then goes silent, is cut after the timeout."""

    async def go_silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # silent; the test ends first

    upstream = await raw_upstream(head_then(go_silent))
    clock = ManualClock()
    handle = await make_gateway(
        routes_yaml(upstream.port, upstream.port, legacy_opts=", timeout: 0.5"), upstream_clock=clock
    )
    pool = handle.gateway.pools["legacy"]
    client = await RawClient.open(handle.port)
    cut = asyncio.ensure_future(assert_truncated(client))
    conn = await eventually(lambda: next((c for c in pool.active if c.got_head), None),
                            what="part of the body read from upstream")  # fmt: skip
    assert conn is not None
    clock.advance(0.45)
    pool.sweep()
    assert not conn.closed and not cut.done()  # silent for less than the timeout
    clock.advance(0.1)
    pool.sweep()
    await cut
    client.close()


async def test_slow_client_pause_is_not_an_upstream_stall(
    make_gateway: GatewayFactory, raw_upstream: StartRaw
) -> None:
    """A client that stops reading for longer than the timeout still gets the whole body afterwards."""
    size = 8 * 1024 * 1024  # far above the write buffers: the gateway must pause reading the upstream

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"z" * 65536)
            await writer.drain()

    upstream = await raw_upstream(big)
    clock = ManualClock()
    handle = await make_gateway(
        routes_yaml(upstream.port, upstream.port, legacy_opts=", timeout: 0.3"), upstream_clock=clock
    )
    pool = handle.gateway.pools["legacy"]
    client = await RawClient.open(handle.port)
    await client.send(b"GET /big HTTP/1.1\r\nHost: g\r\n\r\n")
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    (conn,) = pool.active
    transport = conn.transport
    assert transport is not None
    await eventually(lambda: not transport.is_reading(), what="the gateway pausing its upstream reads")
    for _ in range(4):  # four timeouts without reading, each seen by a sweep
        clock.advance(0.3)
        pool.sweep()
    assert not conn.closed
    body = await asyncio.wait_for(client.reader.readexactly(size), 20)
    assert body == b"z" * size
    client.close()
