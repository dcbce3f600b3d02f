"""Limits on what a client may hold: a body read timeout, a max body size (global and per route), a max
number of connections. Timeouts are decided by the listener's sweep on an injected clock, not by waiting."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import pytest
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient, RawUpstream
from support.waiting import eventually

from proxy.server.connection import ClientProtocol
from proxy.server.gateway import GatewaySettings
from proxy.server.states import NAMES


class FakeClock:
    """An injected clock: the gateway's timeouts see only the time a test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _states(handle: RunningGateway) -> list[str]:
    return [NAMES[cast(ClientProtocol, conn).state] for conn in handle.server.connections]


class Sink:
    """A raw upstream that reads a request head, then whatever body comes, until the gateway closes."""

    def __init__(self) -> None:
        self.heads = 0
        self.body = b""
        self.closed = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.heads += 1
        while data := await reader.read(65536):
            self.body += data
        self.closed.set()


async def test_trickled_body_cut_with_408(make_gateway: GatewayFactory, raw_upstream) -> None:  # type: ignore[no-untyped-def]
    """A body still arriving body_timeout after its head started: 408 JSON, client and upstream closed."""
    sink = Sink()
    up: RawUpstream = await raw_upstream(sink)
    clock = FakeClock()
    settings = GatewaySettings(body_timeout=5.0)
    handle = await make_gateway(routes_yaml(up.port, up.port), settings, clock=clock)
    client = await RawClient.open(handle.port)
    await client.send(b"POST /slow HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\nx")
    await eventually(lambda: sink.body == b"x", what="the first body byte upstream")
    clock.now += 4.0
    handle.server.sweep()  # 4 s of 5: still reading
    await client.send(b"y")
    await eventually(lambda: sink.body == b"xy", what="the second body byte upstream")
    assert _states(handle) == ["body"]
    clock.now += 1.5
    handle.server.sweep()
    response = await asyncio.wait_for(client.response(), 4.0)
    assert response.status == 408
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "request_timeout" and "body" in str(error["message"])
    assert response.header("Date") is not None
    assert await client.at_eof()
    await asyncio.wait_for(sink.closed.wait(), 4.0)  # the upstream connection was released too
    await eventually(lambda: handle.server.connections == set(), what="the client connection gone")
    client.close()


async def test_body_timeout_setting_validated() -> None:
    """Timeouts must be positive; limits 0 (none) or more."""
    with pytest.raises(ValueError, match="body_timeout"):
        GatewaySettings(body_timeout=0)
    with pytest.raises(ValueError, match="header_timeout"):
        GatewaySettings(header_timeout=-1)
    with pytest.raises(ValueError, match="max_body_bytes"):
        GatewaySettings(max_body_bytes=-1)


async def test_content_length_over_max_body_413(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A Content-Length over the global max body is answered 413 JSON before anything is forwarded."""
    handle = await make_gateway(routes_yaml(echo.port, echo.port), GatewaySettings(max_body_bytes=100))
    client = await RawClient.open(handle.port)
    assert (await client.request("POST", "/ok", body=b"a" * 100)).status == 200
    response = await client.request("POST", "/big", body=b"a" * 101)
    assert response.status == 413
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "body_too_large" and "100" in str(error["message"])
    assert response.header("Connection") == "close" and response.header("Date") is not None
    assert [r["path"] for r in echo.seen.requests] == ["/ok"]
    client.close()


ROUTES = """routes:
  - name: small
    match: {path: /small}
    target: legacy
    limits: {max_body: 10}
  - name: unlimited
    match: {path: /unlimited}
    target: legacy
    limits: {max_body: 0}
"""


async def test_route_max_body_overrides_global(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """limits.max_body of a route wins over the global limit, both ways (0: no limit on that route)."""
    handle = await make_gateway(
        routes_yaml(echo.port, echo.port, routes=ROUTES), GatewaySettings(max_body_bytes=20)
    )
    client = await RawClient.open(handle.port)
    assert (await client.request("POST", "/small", body=b"a" * 10)).status == 200
    assert (await client.request("POST", "/unlimited", body=b"a" * 5000)).status == 200
    assert (await client.request("POST", "/other", body=b"a" * 20)).status == 200
    assert (await client.request("POST", "/small", body=b"a" * 11)).status == 413
    client.close()
    client = await RawClient.open(handle.port)
    assert (await client.request("POST", "/other", body=b"a" * 21)).status == 413
    assert [r["path"] for r in echo.seen.requests] == ["/small", "/unlimited", "/other"]
    client.close()


async def test_chunked_body_over_limit_cut_mid_stream(make_gateway: GatewayFactory, raw_upstream) -> None:  # type: ignore[no-untyped-def]
    """A chunked body passing the limit: the upstream request is closed and the client gets 413."""
    sink = Sink()
    up: RawUpstream = await raw_upstream(sink)
    handle = await make_gateway(routes_yaml(up.port, up.port), GatewaySettings(max_body_bytes=1000))
    client = await RawClient.open(handle.port)
    await client.send(b"POST /up HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(b"258\r\n" + b"a" * 600 + b"\r\n")
    await eventually(lambda: len(sink.body) > 0, what="the first chunk upstream")
    await client.send(b"258\r\n" + b"b" * 600 + b"\r\n")
    response = await asyncio.wait_for(client.response(), 4.0)
    assert response.status == 413
    assert await client.at_eof()
    await asyncio.wait_for(sink.closed.wait(), 4.0)
    assert b"b" * 600 not in sink.body  # the chunk over the limit was not forwarded
    client.close()


async def test_max_connections_refused_with_503(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """Past max_connections a new client gets 503 JSON with Connection: close; it is counted."""
    handle = await make_gateway(routes_yaml(echo.port, echo.port), GatewaySettings(max_connections=2))
    first = await RawClient.open(handle.port)
    second = await RawClient.open(handle.port)
    await eventually(lambda: len(handle.server.connections) == 2, what="two connections accepted")
    third = await RawClient.open(handle.port)
    response = await asyncio.wait_for(third.response(), 4.0)
    assert response.status == 503
    assert response.header("Connection") == "close" and response.header("Date") is not None
    assert "limit of 2" in str(response.json()["error"])
    assert await third.at_eof()
    assert handle.gateway.counters.refused_connections == 1
    assert (await first.request("GET", "/x")).status == 200  # the accepted ones are served
    first.close()
    await eventually(lambda: len(handle.server.connections) == 1, what="the first connection gone")
    fourth = await RawClient.open(handle.port)
    assert (await fourth.request("GET", "/y")).status == 200
    for client in (second, third, fourth):
        client.close()


async def test_chunked_over_limit_after_response_started_is_cut(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """Past the limit once the upstream has started answering (it echoes as it reads): the client
    connection is cut, so a truncated response can never look complete."""
    handle = await make_gateway(routes_yaml(echo.port, echo.port), GatewaySettings(max_body_bytes=1000))
    client = await RawClient.open(handle.port)
    await client.send(b"POST /mirror HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(b"258\r\n" + b"a" * 600 + b"\r\n")
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 4.0)
    assert head.startswith(b"HTTP/1.1 200")
    await client.send(b"258\r\n" + b"b" * 600 + b"\r\n")
    rest = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(client.reader.read(65536), 4.0):
            rest += chunk
    assert b"0\r\n\r\n" not in rest and b"b" * 600 not in rest  # cut: no final chunk
    await eventually(lambda: handle.server.connections == set(), what="the client connection gone")
    client.close()


async def test_body_timeout_after_response_started_is_cut(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A body too slow once the response has started cannot get a 408: the connection is cut."""
    clock = FakeClock()
    settings = GatewaySettings(body_timeout=5.0)
    handle = await make_gateway(routes_yaml(echo.port, echo.port), settings, clock=clock)
    client = await RawClient.open(handle.port)
    await client.send(b"POST /mirror HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 4.0)
    assert head.startswith(b"HTTP/1.1 200")
    clock.now += 6.0
    handle.server.sweep()
    rest = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(client.reader.read(65536), 4.0):
            rest += chunk
    assert b"408" not in rest and b"0\r\n\r\n" not in rest
    await eventually(lambda: handle.server.connections == set(), what="the client connection gone")
    client.close()
