"""The gateway forwards requests faithfully: paths, headers, bodies, keep-alive, HEAD/204/304, pipelining."""

from __future__ import annotations

import hashlib
import os
import uuid

from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import GZIPPED, EchoUpstream, RawClient


def headers_of(summary: dict[str, object]) -> list[tuple[str, str]]:
    """The (name, value) pairs the echo upstream received."""
    raw = summary["headers"]
    assert isinstance(raw, list)
    return [(str(k), str(v)) for k, v in raw]


def header(summary: dict[str, object], name: str) -> list[str]:
    """Every value of ``name`` the echo upstream received."""
    return [v for k, v in headers_of(summary) if k.lower() == name.lower()]


async def test_get_forwards_path_query_and_returns_upstream_response(gw: RunningGateway) -> None:
    """A GET reaches the upstream with its path and query, and the upstream's answer comes back."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/users/42?b=2&a=1")
    assert response.status == 200
    assert response.header("X-Upstream") == "echo"
    echoed = response.json()
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/users/42?b=2&a=1"
    client.close()


async def test_routes_to_target_with_forward_path_and_base_path(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A declared route goes to its target with the template's case; the base path is prefixed."""
    routes = 'routes:\n  - name: users\n    match: {methods: [GET], path: "/users/{id}"}\n    target: new\n'
    legacy = EchoUpstream()
    await legacy.start()
    try:
        handle = await make_gateway(routes_yaml(legacy.port, echo.port, routes=routes, legacy_base="/v1"))
        client = await RawClient.open(handle.port)
        response = await client.request("GET", "/USERS/7/?x=1")
        assert response.json()["path"] == "/users/7?x=1"
        assert len(echo.seen.requests) == 1 and not legacy.seen.requests
        response = await client.request("GET", "/other/thing")
        assert response.json()["path"] == "/v1/other/thing"
        assert len(legacy.seen.requests) == 1
        client.close()
    finally:
        await legacy.close()


async def test_keep_alive_reuses_one_upstream_connection(gw: RunningGateway, echo: EchoUpstream) -> None:
    """Sequential requests on one client connection reuse one pooled upstream connection."""
    client = await RawClient.open(gw.port)
    for _ in range(5):
        response = await client.request("GET", "/ping")
        assert response.status == 200
        assert response.header("Connection") is None
    assert len({r["conn"] for r in echo.seen.requests}) == 1
    client.close()


async def test_hop_by_hop_request_headers_removed(gw: RunningGateway) -> None:
    """Hop-by-hop request headers, and any named in Connection, never reach the upstream."""
    client = await RawClient.open(gw.port)
    response = await client.request(
        "GET",
        "/h",
        {
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "Trailer": "X-T",
            "Proxy-Authorization": "Basic eDp5",
            "Upgrade": "h2c",
            "X-End-To-End": "yes",
        },
    )
    echoed = response.json()
    names = {k.lower() for k, _ in headers_of(echoed)}
    for hop in ("connection", "keep-alive", "proxy-connection", "te", "trailer", "proxy-authorization",
                "upgrade", "x-private"):  # fmt: skip
        assert hop not in names, hop
    assert header(echoed, "X-End-To-End") == ["yes"]
    client.close()


async def test_hop_by_hop_response_headers_removed(gw: RunningGateway) -> None:
    """Hop-by-hop response headers (and those named in Connection) are removed; the rest pass."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/hop", {"X-Request-Id": "mine-1"})
    names = response.names()
    for hop in ("keep-alive", "proxy-authenticate", "trailer", "upgrade", "x-secret-hop"):
        assert hop not in names, hop
    assert response.header("X-End-To-End") == "kept"
    assert response.header("X-Request-Id") == "mine-1"
    assert [v for k, v in response.headers if k.lower() == "x-request-id"] == ["mine-1"]
    client.close()


async def test_forwarded_headers_replace_spoofed_ones(gw: RunningGateway) -> None:
    """With no trusted hops, client-sent X-Forwarded-* are replaced with the socket's facts."""
    client = await RawClient.open(gw.port)
    response = await client.request(
        "GET",
        "/xff",
        {
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.test",
            "Forwarded": "for=6.6.6.6",
        },
    )
    echoed = response.json()
    assert header(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(echoed, "X-Forwarded-Proto") == ["http"]
    assert header(echoed, "X-Forwarded-Host") == ["gateway.test"]
    assert header(echoed, "Forwarded") == []
    assert header(echoed, "Via") == ["1.1 strangler"]
    assert header(echoed, "Host") == ["gateway.test"]  # forwarded by default (issue 10)
    client.close()


async def test_request_id_created_kept_or_replaced(gw: RunningGateway) -> None:
    """A sane X-Request-Id is kept, an insane one replaced; the id is sent upstream and returned."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/rid", {"X-Request-Id": "abc-123.X_y"})
    assert response.header("X-Request-Id") == "abc-123.X_y"
    assert header(response.json(), "X-Request-Id") == ["abc-123.X_y"]
    response = await client.request("GET", "/rid", {"X-Request-Id": "bad id!" + "x" * 200})
    made = response.header("X-Request-Id")
    # a made id is a dashed UUID4, the services' own format (issue 11: the gateway must not show)
    assert made is not None and len(made) == 36 and str(uuid.UUID(made)) == made
    assert uuid.UUID(made).version == 4
    assert header(response.json(), "X-Request-Id") == [made]
    response = await client.request("GET", "/rid")
    assert response.header("X-Request-Id") not in (None, made)
    client.close()


async def test_via_loop_refused_with_508(gw: RunningGateway, echo: EchoUpstream) -> None:
    """A request already carrying our Via token is a routing loop: 508 JSON, never forwarded."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/loop", {"Via": "1.0 other, 1.1 strangler"})
    assert response.status == 508
    error = response.json()["error"]
    assert isinstance(error, dict) and error["code"] == "loop_detected"
    assert error["request_id"] == response.header("X-Request-Id")
    assert not echo.seen.requests
    client.close()


async def test_post_body_byte_identical_both_ways(gw: RunningGateway) -> None:
    """Random bytes pass upstream and back unchanged, with Content-Length and chunked framing."""
    body = os.urandom(300_000)
    client = await RawClient.open(gw.port)
    response = await client.request("POST", "/mirror?cl=1", body=body)
    assert response.status == 200 and response.body == body
    assert response.header("Content-Length") == str(len(body))
    response = await client.request("POST", "/mirror", body=body)
    assert response.status == 200 and response.body == body and response.chunked
    client.close()


async def test_chunked_request_with_extensions_forwarded(gw: RunningGateway) -> None:
    """A chunked request body (with chunk extensions and a trailer) arrives de-framed and intact."""
    client = await RawClient.open(gw.port)
    await client.send(
        b"POST /chunked HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    echoed = (await client.response()).json()
    assert echoed["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert header(echoed, "X-Trailer") == []
    client.close()


async def test_gzip_body_passed_untouched(gw: RunningGateway) -> None:
    """A gzip-encoded response is neither decompressed nor recompressed."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/gzip", {"Accept-Encoding": "gzip"})
    assert response.header("Content-Encoding") == "gzip"
    assert response.body == GZIPPED
    client.close()


async def test_redirect_not_followed_and_no_cookie_jar(gw: RunningGateway, echo: EchoUpstream) -> None:
    """A 302 is returned as is (not followed); a Set-Cookie is passed on but never replayed."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/redirect")
    assert response.status == 302 and response.header("Location") == "/echo/redirected"
    response = await client.request("GET", "/cookie")
    assert "session=abc123" in (response.header("Set-Cookie") or "")
    await client.request("GET", "/cookie")
    assert [r["path"] for r in echo.seen.requests] == ["/redirect", "/cookie", "/cookie"]
    assert header(echo.seen.requests[-1], "Cookie") == []
    client.close()


async def test_head_204_304_have_no_body(gw: RunningGateway) -> None:
    """HEAD, 204 and 304 responses carry no body and the connection stays usable."""
    client = await RawClient.open(gw.port)
    response = await client.request("HEAD", "/gzip")
    assert response.status == 200 and response.header("Content-Length") == str(len(GZIPPED))
    response = await client.request("GET", "/status/204")
    assert response.status == 204 and response.header("Transfer-Encoding") is None
    response = await client.request("GET", "/status/304")
    assert response.status == 304 and response.header("ETag") == '"v1"'
    response = await client.request("GET", "/after")
    assert response.status == 200 and response.json()["path"] == "/after"
    client.close()


async def test_pipelined_requests_answered_in_order(gw: RunningGateway) -> None:
    """Pipelined requests sent in one write are answered in order, uncorrupted."""
    client = await RawClient.open(gw.port)
    batch = b"".join(
        b"GET /p/%d HTTP/1.1\r\nHost: g\r\n\r\n" % n if n % 2 else
        b"POST /p/%d HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\nabc" % n
        for n in range(10)
    )  # fmt: skip
    await client.send(batch)
    for n in range(10):
        echoed = (await client.response()).json()
        assert echoed["path"] == f"/p/{n}"
        assert echoed["body_len"] == (0 if n % 2 else 3)
    client.close()


async def test_pipelined_requests_reuse_one_upstream_connection(
    gw: RunningGateway, echo: EchoUpstream
) -> None:
    """A pipelining client's requests go one after another over one upstream connection, whichever reader
    read each answer (a HEAD's is llhttp's): a response's end hands the connection back before it starts
    the client's next request."""
    for method in (b"GET", b"HEAD"):
        client = await RawClient.open(gw.port)
        before = len(echo.seen.requests)
        await client.send(b"".join(b"%s /p/%d HTTP/1.1\r\nHost: g\r\n\r\n" % (method, n) for n in range(6)))
        for _ in range(6):
            assert (await client.response(head=method == b"HEAD")).status == 200
        conns = {r["conn"] for r in echo.seen.requests[before:]}
        assert len(echo.seen.requests) - before == 6 and len(conns) == 1, (method, conns)
        client.close()


async def test_http10_client_gets_close_delimited_response(gw: RunningGateway) -> None:
    """An HTTP/1.0 client gets no chunked framing; the gateway closes after the body."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /download?n=1000 HTTP/1.0\r\n\r\n")
    response = await client.response()
    assert response.status == 200 and len(response.body) == 1000
    assert response.header("Transfer-Encoding") is None
    client.close()


async def test_http10_keep_alive_client_still_gets_http10_framing(gw: RunningGateway) -> None:
    """An HTTP/1.0 client asking for keep-alive (and sending no Host) is still answered as HTTP/1.0."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /download?n=1000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = await client.response()
    assert response.status == 200 and len(response.body) == 1000
    assert response.header("Transfer-Encoding") is None
    client.close()


async def test_connection_close_honoured(gw: RunningGateway) -> None:
    """A client's Connection: close gets one response and then the connection closes."""
    client = await RawClient.open(gw.port)
    response = await client.request("GET", "/bye", {"Connection": "close"})
    assert response.status == 200 and response.header("Connection") == "close"
    assert await client.at_eof()
    client.close()


async def test_half_closed_client_still_answered(gw: RunningGateway) -> None:
    """A client that sends a complete request and then half-closes (like nc) still gets the answer."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /half HTTP/1.1\r\nHost: g\r\n\r\n")
    client.writer.write_eof()
    response = await client.response()
    assert response.status == 200 and response.json()["path"] == "/half"
    assert await client.at_eof()
    client.close()


async def test_half_closed_after_a_refused_head_answers_both(gw: RunningGateway) -> None:
    """A refused pipelined head then a half-close: the request in flight and the refusal are both answered."""
    client = await RawClient.open(gw.port)
    too_long = b"/" + b"a" * 9000  # over the default max_request_line: refused 414 from inside the head
    await client.send(b"GET /sse?gap=0.1 HTTP/1.1\r\nHost: g\r\n\r\nGET " + too_long + b" HTTP/1.1\r\n")
    client.writer.write_eof()
    first = await client.response()
    assert first.status == 200 and first.body.count(b"data: event") == 3
    refused = await client.response()
    assert refused.status == 414
    assert await client.at_eof()
    client.close()
