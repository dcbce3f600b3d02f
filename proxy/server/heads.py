"""The request and response heads the data path writes, built by pure functions. No I/O.

`proxy.server.forwarding` decides which header lines are forwarded; these functions frame them: the
upstream request head (request line and Host prefix, forwarded lines, the framing the gateway re-makes)
and the client response head (status line, kept lines, re-framing for the client). Each runs once per
request on the hot path, so each is one function building one bytes object.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AS_IS",
    "CHUNKED",
    "CLOSE_DELIMITED",
    "interim_head",
    "request_head",
    "response_head",
]

# How a response body is sent to the client, as `response_head` decided (ints: compared per request).
AS_IS: Final = 0  # its Content-Length, or no body at all (HEAD, 204, 304, 101)
CHUNKED: Final = 1  # re-chunked: the upstream's length is unknown and the client speaks HTTP/1.1
CLOSE_DELIMITED: Final = 2  # length unknown, the client speaks HTTP/1.0: the body ends with the connection

# Final: compiled code uses the constants themselves, not a look-up in the module's dict per use.
_CRLF: Final = b"\r\n"
_END_CLOSE: Final = b"Connection: close\r\n\r\n"
_UPGRADE: Final = b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
# Status lines up to the reason, made once: formatting the code with %d costs ~200 instructions a response.
_STATUS_LINES: Final = [b"HTTP/1.1 %d " % code for code in range(600)]


def _status_line(status: int) -> bytes:
    """``b"HTTP/1.1 <status> "`` (llhttp reads any three digits: 600-999 are formatted)."""
    return _STATUS_LINES[status] if 0 <= status < 600 else b"HTTP/1.1 %d " % status


def request_head(
    prefix: bytes,
    block: bytes,
    content_length: int | None,
    chunked: bool,
    websocket: bool,
    host: bytes | None = None,
) -> bytes:
    """The upstream request head: ``prefix`` (request line and Host), ``block``, then the framing.

    ``host``, when given, is the Host to send after a ``prefix`` that has none (the client's, forwarded).

    ``block`` is the forwarded ``b"Name: value"`` lines (`Forwarder.request`) joined by CRLF (the caller
    keeps it: shadowing sends the same lines); the body's framing is the gateway's own:
    ``Content-Length`` when the client sent one, ``Transfer-Encoding: chunked`` when it chunked, and the
    WebSocket upgrade headers for an upgrade the gateway tunnels.
    """
    if content_length is None and not chunked and not websocket:  # the common case (no body): one copy
        if host is None:
            return b"%b%b\r\n\r\n" % (prefix, block)
        return b"%bHost: %b\r\n%b\r\n\r\n" % (prefix, host, block)
    head = [prefix] if host is None else [prefix, b"Host: ", host, _CRLF]
    head += (block, _CRLF)
    if content_length is not None:
        head.append(b"Content-Length: %d\r\n" % content_length)
    elif chunked:
        head.append(b"Transfer-Encoding: chunked\r\n")
    if websocket:
        head.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    head.append(_CRLF)
    return b"".join(head)


def response_head(
    status: int,
    reason: bytes,
    lines: list[bytes],
    length: bytes | None,
    chunked: bool,
    keep_alive: bool,
    is_head: bool,
    http11: bool,
) -> tuple[bytes, int]:
    """The client response head and how its body is framed (`AS_IS`, `CHUNKED` or `CLOSE_DELIMITED`).

    ``lines`` are the kept ``b"Name: value"`` lines (`Forwarder.response_lines`, request id included);
    ``length`` and ``chunked`` are the upstream's framing. A usable length is kept; otherwise the body is
    re-chunked for an HTTP/1.1 client or delimited by closing for HTTP/1.0 (the caller must then not
    keep the connection alive). ``keep_alive`` False adds ``Connection: close``; a 101 carries the
    WebSocket upgrade headers instead.
    """
    if length is not None and not chunked and status != 101:
        # The common case: the whole head in one format.
        return (
            b"%b%b\r\n%b\r\nContent-Length: %b\r\n%b"
            % (_status_line(status), reason, _CRLF.join(lines), length, _CRLF if keep_alive else _END_CLOSE),
            AS_IS,
        )
    head = [_status_line(status), reason, _CRLF, _CRLF.join(lines), _CRLF]
    framing = AS_IS
    if status == 101:
        head.append(_UPGRADE)
        return b"".join(head), AS_IS
    if is_head or status in (204, 304):
        pass
    elif http11:
        head.append(b"Transfer-Encoding: chunked\r\n")
        framing = CHUNKED
    else:
        framing = CLOSE_DELIMITED
        keep_alive = False
    head.append(_CRLF if keep_alive else _END_CLOSE)
    return b"".join(head), framing


def interim_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An interim (1xx) response head relayed to an HTTP/1.1 client; ``headers`` are already filtered."""
    out = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
    for name, value in headers:
        out += (name, b": ", value, _CRLF)
    out.append(_CRLF)
    return b"".join(out)
