"""Ambiguous or oversized requests are refused with a JSON 400/414/431 and the connection closed;
bad upstream framing becomes a 502."""

from __future__ import annotations

import asyncio

import pytest
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient, RawUpstream, read_request

from proxy.server.gateway import GatewaySettings

BAD_REQUESTS = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "duplicate content-length": (
        b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "content-length list": b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 3, 3\r\n\r\nabc",
    "transfer-encoding gzip": b"POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "transfer-encoding gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "transfer-encoding twice": (
        b"POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n"
    ),
    "obs-fold": b"GET / HTTP/1.1\r\nHost: g\r\nX-A: b\r\n  folded\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHost: g\r\nX A: b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: g\r\nContent-Length : 0\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: g\n\n",
    "bad chunk size": (
        b"POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "dot segment": b"GET /a/../admin HTTP/1.1\r\nHost: g\r\n\r\n",
    "encoded slash": b"GET /a%2Fb HTTP/1.1\r\nHost: g\r\n\r\n",
    "absolute form": b"GET http://evil.test/ HTTP/1.1\r\nHost: g\r\n\r\n",
    "upgrade with body": (
        b"POST / HTTP/1.1\r\nHost: g\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc"
    ),
}


@pytest.mark.parametrize("raw", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_ambiguous_request_refused_400_and_closed(
    gw: RunningGateway, echo: EchoUpstream, raw: bytes
) -> None:
    """Ambiguous framing, invalid headers or a refused path: 400 JSON, closed, nothing forwarded."""
    client = await RawClient.open(gw.port)
    await client.send(raw)
    response = await client.response()
    assert response.status == 400
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "bad_request"
    assert error["request_id"] == response.header("X-Request-Id")
    assert response.header("Connection") == "close"
    assert await client.at_eof()
    assert echo.seen.requests == []
    client.close()


async def test_connect_method_refused(gw: RunningGateway) -> None:
    """CONNECT (forward-proxy tunnelling) is refused with 405."""
    client = await RawClient.open(gw.port)
    await client.send(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    assert (await client.response()).status == 405
    assert await client.at_eof()
    client.close()


async def test_oversized_headers_431(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """Headers above max_header_bytes get 431, whether in many headers or one endless line."""
    settings = GatewaySettings(max_header_bytes=8192)
    handle = await make_gateway(routes_yaml(echo.port, echo.port), settings)
    client = await RawClient.open(handle.port)
    many = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(100))
    await client.send(b"GET / HTTP/1.1\r\nHost: g\r\n" + many + b"\r\n")
    assert (await client.response()).status == 431
    client.close()
    client = await RawClient.open(handle.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: g\r\nX-Endless: " + b"a" * 100_000)
    response = await client.response()
    assert response.status == 431
    assert await client.at_eof()
    client.close()
    assert echo.seen.requests == []


async def test_long_request_line_414(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A request target longer than max_request_line gets 414."""
    handle = await make_gateway(routes_yaml(echo.port, echo.port), GatewaySettings(max_request_line=1024))
    client = await RawClient.open(handle.port)
    await client.send(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await client.response()).status == 414
    client.close()


async def test_error_after_pipelined_good_request_keeps_order(gw: RunningGateway) -> None:
    """A bad request pipelined behind a good one is answered after it, then the connection closes."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /first HTTP/1.1\r\nHost: g\r\n\r\nGET / HTTP/1.1\r\nHost: g\r\nX A: b\r\n\r\n")
    first = await client.response()
    assert first.status == 200 and first.json()["path"] == "/first"
    assert (await client.response()).status == 400
    assert await client.at_eof()
    client.close()


BAD_RESPONSES = {
    "content-length and chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "conflicting content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "not http": b"SSH-2.0-OpenSSH_9.0\r\n\r\n",
    "bad status line": b"HTTP/1.1 twohundred OK\r\n\r\n",
    "unasked 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
}


@pytest.mark.parametrize("raw", BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
async def test_bad_upstream_framing_502(
    make_gateway: GatewayFactory, raw_upstream: object, raw: bytes
) -> None:
    """An upstream response with ambiguous or invalid framing becomes a 502 JSON error."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        await reader.read()  # hold the connection open until the other side closes it

    assert callable(raw_upstream)
    upstream: RawUpstream = await raw_upstream(handler)
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port))
    client = await RawClient.open(handle.port)
    response = await client.request("GET", "/x")
    assert response.status == 502
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "bad_gateway"
    client.close()
