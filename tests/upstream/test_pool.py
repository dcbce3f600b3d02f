"""`UpstreamPool.fetch`: the buffered call shadowing uses, on the same pooled machinery."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Awaitable, Callable

import pytest
from support.clock import ManualClock
from support.upstreams import EchoUpstream, Handler, RawUpstream, read_request
from support.waiting import eventually

from proxy.http1.capped import Capped, digest_of
from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec
from proxy.upstream.pool import UpstreamPool

StartRaw = Callable[[Handler], Awaitable[RawUpstream]]


def pool_for(
    port: int, base_path: str = "", total_timeout: float = 5.0, clock: Callable[[], float] | None = None
) -> UpstreamPool:
    """A pool for a loopback upstream (``clock``: its sweep's, default the loop's)."""
    spec = UpstreamSpec(
        name="up", url=f"http://127.0.0.1:{port}{base_path}", scheme="http", host="127.0.0.1", port=port,
        base_path=base_path, connect_timeout=1.0, total_timeout=total_timeout, pool_size=4,
    )  # fmt: skip
    return UpstreamPool(spec, clock=clock)


async def test_fetch_returns_status_headers_body_and_reuses_connection(echo: EchoUpstream) -> None:
    """fetch sends method, base path + path, headers and body; the connection is pooled afterwards."""
    pool = pool_for(echo.port, base_path="/base")
    headers = [(b"X-Test", b"1"), (b"Host", b"ignored"), (b"Content-Length", b"999")]
    status, response_headers, body = await pool.fetch("POST", "/a?b=c", headers, b"hello", 5.0)
    assert status == 200
    assert (b"X-Upstream", b"echo") in response_headers
    echoed = json.loads(body)
    assert echoed["path"] == "/base/a?b=c" and echoed["body_len"] == 5
    assert ["X-Test", "1"] in echoed["headers"]
    assert ["Host", f"127.0.0.1:{echo.port}"] in echoed["headers"]
    await pool.fetch("GET", "/again", [], b"", 5.0)
    assert len(pool.idle) == 1
    assert len({r["conn"] for r in echo.seen.requests}) == 1
    pool.close()


async def test_fetch_connect_error_kind() -> None:
    """Nothing listening: UpstreamError kind 'connect'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = pool_for(port)
    with pytest.raises(UpstreamError) as caught:
        await pool.fetch("GET", "/", [], b"", 2.0)
    assert caught.value.kind == "connect" and caught.value.status == 502


async def test_fetch_timeout_kind(raw_upstream: StartRaw) -> None:
    """An upstream that never answers: kind 'timeout' once the pool's clock passes the deadline."""
    arrived = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await asyncio.sleep(60)  # never answers; the test ends first

    upstream = await raw_upstream(stall)
    clock = ManualClock()  # the sweep's clock: the test says when the 30 s have passed
    pool = pool_for(upstream.port, clock=clock)
    fetching = asyncio.ensure_future(pool.fetch("GET", "/", [], b"", 30.0))
    await eventually(arrived.is_set, what="the request upstream")
    (conn,) = pool.active
    clock.advance(29.9)
    pool.sweep()
    assert not conn.closed and not fetching.done()  # not before its deadline
    clock.advance(0.2)
    pool.sweep()
    with pytest.raises(UpstreamError) as caught:
        await fetching
    assert caught.value.kind == "timeout" and caught.value.status == 504
    assert "sent no response within" in caught.value.message
    pool.close()


async def test_fetch_protocol_kind(raw_upstream: StartRaw) -> None:
    """An unparseable response: UpstreamError kind 'protocol'."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        await writer.drain()
        await reader.read()  # hold the connection open until the other side closes it

    upstream = await raw_upstream(garbage)
    pool = pool_for(upstream.port)
    with pytest.raises(UpstreamError) as caught:
        await pool.fetch("GET", "/", [], b"", 2.0)
    assert caught.value.kind == "protocol"
    pool.close()


async def test_fetch_refuses_an_unasked_upgrade(raw_upstream: StartRaw) -> None:
    """A 101 to a request that did not ask to upgrade is a protocol error that says so."""

    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client closes

    upstream = await raw_upstream(switch)
    pool = pool_for(upstream.port)
    with pytest.raises(UpstreamError) as caught:
        await pool.fetch("GET", "/", [], b"", 2.0)
    assert caught.value.kind == "protocol"
    assert "did not ask to upgrade" in caught.value.message
    pool.close()


async def test_fetch_head_ends_at_its_head_and_reuses_the_connection(raw_upstream: StartRaw) -> None:
    """The answer to HEAD has no body whatever Content-Length says; the connection serves the next call."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        while True:
            line = (await read_request(reader))[0]
            seen.append(line)
            if line.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    upstream = await raw_upstream(answer)
    pool = pool_for(upstream.port)
    status, headers, body = await pool.fetch("HEAD", "/h", [], b"", 2.0)
    assert (status, body) == (200, b"") and (b"Content-Length", b"5") in headers
    assert (await pool.fetch("GET", "/g", [], b"", 2.0))[2] == b"hello"
    assert seen == [b"HEAD /h HTTP/1.1", b"GET /g HTTP/1.1"]
    assert connections == [0]
    pool.close()


async def test_connect_failure_names_the_upstream_and_its_address() -> None:
    """Nothing listening: UpstreamError 'connect' naming the upstream, its address, and what to check."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = pool_for(port)
    with pytest.raises(UpstreamError) as caught:
        await pool.fetch("GET", "/", [], b"", 2.0)
    assert caught.value.kind == "connect"
    assert f"cannot connect to upstream up (127.0.0.1:{port})" in caught.value.message
    assert "is it running?" in caught.value.message
    pool.close()


async def test_fetch_retries_idempotent_on_stale_connection_only(raw_upstream: StartRaw) -> None:
    """A stale pooled connection: GET is resent once on a new connection, POST is not."""
    seen: list[bytes] = []

    async def one_then_stale(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await read_request(reader))[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        seen.append((await read_request(reader))[0])
        writer.transport.abort()

    upstream = await raw_upstream(one_then_stale)
    pool = pool_for(upstream.port)
    assert (await pool.fetch("GET", "/1", [], b"", 2.0))[2] == b"ok"
    assert (await pool.fetch("GET", "/2", [], b"", 2.0))[2] == b"ok"
    assert seen == [b"GET /1 HTTP/1.1", b"GET /2 HTTP/1.1", b"GET /2 HTTP/1.1"]
    with pytest.raises(UpstreamError) as caught:
        await pool.fetch("POST", "/3", [], b"x", 2.0)
    assert caught.value.kind == "connect"
    assert seen[-1] == b"POST /3 HTTP/1.1" and seen.count(b"POST /3 HTTP/1.1") == 1
    pool.close()


async def test_closed_pool_closes_connections_once_idle(echo: EchoUpstream) -> None:
    """A retired pool keeps no idle connections: they close when their response ends."""
    pool = pool_for(echo.port)
    await pool.fetch("GET", "/", [], b"", 2.0)
    assert len(pool.idle) == 1
    pool.close()
    assert pool.idle == []
    await pool.fetch("GET", "/", [], b"", 2.0)
    assert pool.idle == []



async def test_fetch_keeps_a_body_to_its_cap_and_hashes_the_whole(raw_upstream: StartRaw) -> None:
    """With ``body_cap``, a longer body comes back as a Capped: its first cap + 1 bytes, and the sha256
    and size of all of it (chunked here, so the cap is passed in the middle of a chunk); the connection
    is reused. A body within the cap is plain bytes."""
    whole = bytes(range(256)) * 4096  # 1 MiB

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line, _, _ = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            body = whole if b"/big" in line else b"small"
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 10000):
                part = body[start:start + 10000]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    upstream = await raw_upstream(answer)
    pool = pool_for(upstream.port)
    _, _, body = await pool.fetch("GET", "/big", [], b"", 5.0, body_cap=25000)
    assert isinstance(body, Capped) and bytes(body) == whole[:25001]
    assert (body.size, body.digest) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert digest_of(body) == hashlib.sha256(whole).hexdigest()
    small = (await pool.fetch("GET", "/small", [], b"", 5.0, body_cap=25000))[2]
    assert small == b"small" and not isinstance(small, Capped)
    assert upstream.connections == 1
    pool.close()
