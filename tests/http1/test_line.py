"""`origin_line` reads a request line only as llhttp does, and leaves llhttp every line it is unsure of."""

from __future__ import annotations

import httptools
import pytest

from proxy.http1.line import origin_line

TAIL = b"\r\nHost: h\r\n\r\n"


def llhttp(line: bytes) -> tuple[bytes, bytes, str] | None:
    """(method, url, version) as llhttp reads ``line`` followed by a plain head; None when it refuses."""

    class Sink:
        url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(line + TAIL)
    except httptools.HttpParserError:
        return None
    return parser.get_method(), sink.url, parser.get_http_version()


def agrees(line: bytes) -> tuple[bytes, bytes] | None:
    """`origin_line`'s reading of ``line``, checked against llhttp's when it has one."""
    read = origin_line(line)
    if read is not None:
        assert llhttp(line) == (*read, "1.1"), line
    return read


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/1.1",
        b"GET /api/v1/users/1 HTTP/1.1",
        b"GET /search?q=a%20b&x=[1]|{2}~^`\\ HTTP/1.1",
        b"HEAD /h HTTP/1.1",
        b"POST /p HTTP/1.1",
        b"PUT /p HTTP/1.1",
        b"DELETE /d HTTP/1.1",
        b"OPTIONS /o HTTP/1.1",
        b"PATCH /p HTTP/1.1",
    ],
)
def test_common_lines_are_read_as_llhttp_reads_them(line: bytes) -> None:
    method, _, target = line.partition(b" ")
    assert agrees(line) == (method, target.rpartition(b" ")[0])


@pytest.mark.parametrize(
    "line",
    [
        b"GET /a HTTP/1.0",  # HTTP/1.0: keep-alive and framing differ; the parser's
        b"GET /a HTTP/1.2",
        b"GET /a http/1.1",
        b"get /a HTTP/1.1",  # llhttp refuses a lower-case method
        b"CONNECT h:443 HTTP/1.1",  # a tunnel
        b"GET http://h/a HTTP/1.1",  # absolute form
        b"OPTIONS * HTTP/1.1",
        b"GET /a#frag HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET  /a HTTP/1.1",
        b"GET /a  HTTP/1.1",
        b"GET HTTP/1.1",
        b" GET /a HTTP/1.1",
        b"PROPFIND /a HTTP/1.1",  # a method llhttp knows, but not a plain request's
        b"GET /a HTTP/1.1\r\nX: GET /b",  # two lines
        b"",
    ],
)
def test_other_lines_are_left_to_llhttp(line: bytes) -> None:
    assert agrees(line) is None


@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_each_byte_of_a_target_is_judged_as_llhttp_would(method: bytes) -> None:
    """Every byte value in three places of a target: accepted only where llhttp reads the same target,
    and every visible ASCII byte but "#" accepted (the fast path is not empty)."""
    accepted = set()
    for byte in range(256):
        one = bytes([byte])
        for target in (b"/" + one, b"/a" + one + b"b", b"/a?" + one):
            read = agrees(method + b" " + target + b" HTTP/1.1")
            if read is not None:
                assert read == (method, target)
                accepted.add(byte)
    assert accepted == set(range(0x21, 0x7F)) - {ord("#")}
