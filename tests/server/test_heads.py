"""The request and response heads (proxy.server.heads), built without sockets."""

from __future__ import annotations

from proxy.server.heads import AS_IS, CHUNKED, CLOSE_DELIMITED, interim_head, request_head, response_head

PREFIX = b"GET /items?x=1 HTTP/1.1\r\nHost: up:80\r\n"
LINES = [b"Accept: */*", b"Via: 1.1 strangler"]
BLOCK = b"\r\n".join(LINES)  # request_head takes the lines joined


def test_request_head_without_body_is_prefix_lines_and_blank_line() -> None:
    """A request without a body: the prefix, the forwarded lines, no framing header."""
    assert request_head(PREFIX, BLOCK, None, False, False) == (
        PREFIX + b"Accept: */*\r\nVia: 1.1 strangler\r\n\r\n"
    )


def test_request_head_re_makes_the_framing() -> None:
    """Content-Length (even 0) and chunked are the gateway's own lines, after the forwarded ones."""
    assert request_head(PREFIX, BLOCK, 5, False, False).endswith(
        b"Via: 1.1 strangler\r\nContent-Length: 5\r\n\r\n"
    )
    assert request_head(PREFIX, BLOCK, 0, False, False).endswith(b"\r\nContent-Length: 0\r\n\r\n")
    assert request_head(PREFIX, BLOCK, None, True, False).endswith(
        b"Via: 1.1 strangler\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


def test_request_head_for_a_websocket_asks_the_upstream_to_upgrade() -> None:
    """A tunnelled WebSocket request carries Connection: Upgrade and Upgrade: websocket."""
    head = request_head(PREFIX, BLOCK, None, False, True)
    assert head == PREFIX + (
        b"Accept: */*\r\nVia: 1.1 strangler\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )


def test_response_head_keeps_a_content_length() -> None:
    """A response with a length is sent as is; keep-alive adds nothing, otherwise Connection: close."""
    head, framing = response_head(200, b"OK", [b"A: 1"], b"12", False, True, False, True)
    assert (head, framing) == (b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 12\r\n\r\n", AS_IS)
    head, framing = response_head(404, b"Not Found", [b"A: 1"], b"0", False, False, False, True)
    assert head == b"HTTP/1.1 404 Not Found\r\nA: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert framing == AS_IS


def test_response_head_re_chunks_an_unknown_length_for_http11() -> None:
    """No usable length (chunked upstream, even with a Content-Length) and an HTTP/1.1 client: chunked."""
    for length in (None, b"12"):
        head, framing = response_head(200, b"OK", [b"A: 1"], length, True, True, False, True)
        assert (head, framing) == (b"HTTP/1.1 200 OK\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED)


def test_response_head_is_close_delimited_for_http10() -> None:
    """No usable length and an HTTP/1.0 client: the body ends with the connection, which closes."""
    head, framing = response_head(200, b"OK", [b"A: 1"], None, False, True, False, False)
    assert (head, framing) == (b"HTTP/1.1 200 OK\r\nA: 1\r\nConnection: close\r\n\r\n", CLOSE_DELIMITED)


def test_response_head_without_body_has_no_framing() -> None:
    """HEAD, 204 and 304 answers carry no body, so no Transfer-Encoding is added."""
    for status, is_head in ((200, True), (204, False), (304, False)):
        head, framing = response_head(status, b"X", [b"A: 1"], None, False, True, is_head, True)
        assert (head, framing) == (b"HTTP/1.1 %d X\r\nA: 1\r\n\r\n" % status, AS_IS)


def test_response_head_for_101_upgrades() -> None:
    """A 101 carries the upgrade headers, never Content-Length or Connection: close."""
    head, framing = response_head(101, b"Switching Protocols", [b"A: 1"], b"0", False, False, False, True)
    assert head == (
        b"HTTP/1.1 101 Switching Protocols\r\nA: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert framing == AS_IS


def test_interim_head() -> None:
    """A 1xx relayed to the client: its status line and (already filtered) headers."""
    assert interim_head(103, b"Early Hints", [(b"Link", b"</a.css>")]) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    )


def test_response_status_line_for_any_three_digits() -> None:
    """The status line of a known code comes from the table, any other three digits formatted alike."""
    for status in (200, 404, 599, 600, 799, 999):
        head, _ = response_head(status, b"Why", [b"X-A: 1"], b"0", False, True, False, True)
        assert head.startswith(b"HTTP/1.1 %d Why\r\nX-A: 1\r\n" % status), head
        head, _ = response_head(status, b"", [b"X-A: 1"], None, False, True, False, True)
        assert head.startswith(b"HTTP/1.1 %d \r\nX-A: 1\r\n" % status), head
