"""A head the client sent before but for its request line is read without the parser
(`ClientProtocol._repeat`): forwarded exactly as a parsed one, and every head the shortcut is unsure of
still goes to llhttp."""

from __future__ import annotations

import pytest
from support.feeds import fed_to_parser
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient

from proxy.server.config import GatewaySettings
from proxy.server.connection import ClientProtocol

HEADERS = {"Accept": "application/json", "User-Agent": "repeat-test/1"}
HEAD_TAIL = b"\r\nHost: gateway.test\r\nAccept: application/json\r\nUser-Agent: repeat-test/1\r\n\r\n"


def forwarded(summary: dict[str, object]) -> list[tuple[str, str]]:
    """The headers the echo upstream received, but the request id (new for every request)."""
    raw = summary["headers"]
    assert isinstance(raw, list)
    return [(str(k), str(v)) for k, v in raw if str(k).lower() != "x-request-id"]


def request_id(summary: dict[str, object]) -> str:
    raw = summary["headers"]
    assert isinstance(raw, list)
    (value,) = [str(v) for k, v in raw if str(k).lower() == "x-request-id"]
    return value


async def primed(gw: RunningGateway) -> tuple[RawClient, ClientProtocol, list[bytes]]:
    """A client that sent the same headers twice (so its connection remembers them), its connection, and
    the reads its parser is fed from then on."""
    client = await RawClient.open(gw.port)
    for path in ("/prime/1", "/prime/2"):
        assert (await client.request("GET", path, HEADERS)).status == 200
    here = client.writer.get_extra_info("sockname")
    (conn,) = [c for c in gw.server.connections if c.transport.get_extra_info("peername") == here]
    assert conn.tail == HEAD_TAIL
    fed = fed_to_parser(conn)
    return client, conn, fed


async def test_a_repeated_head_skips_the_parser_and_is_forwarded_as_a_parsed_one(
    gw: RunningGateway, echo: EchoUpstream
) -> None:
    client, _, fed = await primed(gw)
    paths = ["/users/2", "/users/3?x=1&y=%20", "/other/thing", "/users/4"]
    for path in paths:
        response = await client.request("GET", path, HEADERS)
        assert response.status == 200 and response.json()["path"] == path
    head = await client.request("HEAD", "/users/5", HEADERS)  # another method of the set, no body
    assert head.status == 200 and head.body == b""
    assert fed == []  # none of them went to the parser
    seen = echo.seen.requests[-7:]
    assert [r["method"] for r in seen] == ["GET"] * 6 + ["HEAD"]
    assert [r["path"] for r in seen[:6]] == ["/prime/1", "/prime/2", *paths]
    parsed = forwarded(seen[0])
    assert all(forwarded(r) == parsed for r in seen)  # X-Forwarded-*, Via, Host: as when parsed
    assert len({request_id(r) for r in seen}) == 7
    assert echo.seen.requests[-1]["headers"] == seen[-1]["headers"]
    client.close()


async def test_what_the_shortcut_is_unsure_of_goes_to_the_parser(gw: RunningGateway) -> None:
    client, conn, fed = await primed(gw)
    # Two heads in one read (pipelined): both answered, in order, by the parser.
    await client.send(b"GET /p/1 HTTP/1.1" + HEAD_TAIL + b"GET /p/2 HTTP/1.1" + HEAD_TAIL)
    assert (await client.response()).json()["path"] == "/p/1"
    assert (await client.response()).json()["path"] == "/p/2"
    assert len(fed) == 1
    # Other headers: parsed, and remembered in place of the old ones once they too came twice.
    for n in range(3):
        response = await client.request("GET", f"/other/{n}", {**HEADERS, "X-Extra": "1"})
        assert response.status == 200
    assert len(fed) == 3 and conn.tail.endswith(b"X-Extra: 1\r\n\r\n")
    # An HTTP/1.0 line with the remembered headers: the parser's (and the connection closes after it).
    await client.send(b"GET /old HTTP/1.0\r\nHost: gateway.test\r\nAccept: application/json\r\n"
                      b"User-Agent: repeat-test/1\r\nX-Extra: 1\r\n\r\n")  # fmt: skip
    response = await client.response()
    assert response.status == 200 and len(fed) == 4
    assert await client.reader.read() == b""  # closed, as for any HTTP/1.0 request without keep-alive
    client.close()


async def test_a_bad_line_with_a_known_head_is_refused_by_the_parser(gw: RunningGateway) -> None:
    client, _, fed = await primed(gw)
    await client.send(b"GET /a\nb HTTP/1.1" + HEAD_TAIL)  # a bare LF in the target
    response = await client.response()
    assert response.status == 400 and "malformed request" in response.json()["error"]["message"]
    assert len(fed) == 1
    client.close()


@pytest.mark.parametrize(
    ("target", "parsed"),
    # `_route` refuses the first, read either way; the parser reads the second (and the gateway refuses it)
    [(b"/a/%zz", 0), (b"/frag#x", 1)],
)
async def test_a_refusal_of_a_repeated_head_is_answered_as_when_parsed(
    gw: RunningGateway, target: bytes, parsed: int
) -> None:
    """A path the gateway refuses: the same answer, with a request id, then the close."""
    answers = []
    for remembered in (False, True):
        fed: list[bytes] = []
        if remembered:
            client, _, fed = await primed(gw)
        else:
            client = await RawClient.open(gw.port)
        await client.send(b"GET " + target + b" HTTP/1.1" + HEAD_TAIL)
        response = await client.response()
        assert len(fed) == (parsed if remembered else 0)
        assert response.header("X-Request-Id")
        error = response.json()["error"]
        assert error["request_id"] == response.header("X-Request-Id")
        answers.append((response.status, error["message"]))
        assert await client.reader.read() == b""
        client.close()
    assert answers[0] == answers[1] and answers[0][0] == 400


async def test_a_target_over_the_line_limit_goes_to_the_parser(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    handle = await make_gateway(routes_yaml(echo.port, echo.port), GatewaySettings(max_request_line=64))
    client, _, fed = await primed(handle)
    await client.send(b"GET /" + b"a" * 80 + b" HTTP/1.1" + HEAD_TAIL)
    assert (await client.response()).status == 414
    assert len(fed) == 1
    client.close()
