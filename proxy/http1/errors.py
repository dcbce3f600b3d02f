"""The data path's error vocabulary: protocol errors, upstream failures, the JSON errors sent to clients.

Every error the gateway itself produces has the same shape, always with the request id, so a client or
an operator can find the matching access-log line:
``{"error":{"code":"bad_gateway","message":"...","request_id":"..."}}``.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Literal

__all__ = ["ERROR_CODES", "ProtocolError", "UpstreamError", "UpstreamErrorKind", "error_response"]

UpstreamErrorKind = Literal["connect", "timeout", "protocol"]

# status -> (reason phrase, error code); the one table mapping gateway errors to HTTP.
ERROR_CODES: dict[int, tuple[bytes, str]] = {
    400: (b"Bad Request", "bad_request"),
    405: (b"Method Not Allowed", "method_not_allowed"),
    408: (b"Request Timeout", "request_timeout"),
    413: (b"Content Too Large", "body_too_large"),
    414: (b"URI Too Long", "uri_too_long"),
    431: (b"Request Header Fields Too Large", "header_too_large"),
    500: (b"Internal Server Error", "internal_error"),
    502: (b"Bad Gateway", "bad_gateway"),
    503: (b"Service Unavailable", "unavailable"),
    504: (b"Gateway Timeout", "gateway_timeout"),
    505: (b"HTTP Version Not Supported", "http_version_not_supported"),
    508: (b"Loop Detected", "loop_detected"),
}


class ProtocolError(Exception):
    """Bytes from a peer that break HTTP/1.1: unparseable, or framed ambiguously (RFC 9112, 6.3).

    Raised by `proxy.http1.reader`; the upstream clients turn it into an `UpstreamError` ``protocol``
    naming the upstream.
    """


class UpstreamError(Exception):
    """A request to an upstream failed before a complete response was read.

    ``kind`` is ``connect`` (refused, unreachable, reset before any response byte), ``timeout``
    (connect or response-header deadline passed) or ``protocol`` (unparseable or ambiguous response).
    """

    def __init__(self, kind: UpstreamErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: UpstreamErrorKind = kind
        self.message = message

    @property
    def status(self) -> int:
        """The status the gateway answers with: 504 for timeouts, 502 otherwise."""
        return 504 if self.kind == "timeout" else 502


def error_response(
    status: int, message: str, request_id: bytes, *, request_id_header: bytes, close: bool
) -> bytes:
    """A complete HTTP/1.1 JSON error response (head and body) for the gateway's own errors."""
    reason, code = ERROR_CODES.get(status, (b"Error", "error"))
    body = json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id.decode("ascii")}},
        separators=(",", ":"),
    ).encode()
    # Date (RFC 9110 6.6.1): an origin with a clock must send it; errors are rare, so no caching.
    head = (
        b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s: %s\r\n"
        % (
            status,
            reason,
            formatdate(usegmt=True).encode("ascii"),
            len(body),
            request_id_header,
            request_id,
        )
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body
