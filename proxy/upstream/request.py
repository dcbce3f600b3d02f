"""The one request builder of the upstream clients: a whole HTTP/1.1 request as bytes. No I/O.

Used for buffered calls (`proxy.upstream.fetch`, `proxy.upstream.call`) and pipelined shadow GETs
(`proxy.upstream.pipe`). The forwarder builds its streaming heads itself (`proxy.server.forwarding`).
"""

from __future__ import annotations

from typing import Protocol

from proxy.http1.headers import Headers

__all__ = ["IDEMPOTENT", "RequestTarget", "build_get", "build_request"]

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS"))  # safe to send again when a connection dies
_DROP = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection"))


class RequestTarget(Protocol):
    """Where a request goes: the upstream's base path and Host value (an `UpstreamPool` is one)."""

    @property
    def base_path(self) -> bytes: ...
    @property
    def hostport(self) -> bytes: ...


def build_request(
    target: RequestTarget, method: str, path_qs: str, headers: Headers, body: bytes, host: bytes | None = None
) -> bytes:
    """The request bytes for ``target``: its base path and Host, framing headers replaced by our own.

    ``path_qs`` is the path (the base path is prefixed) plus ``?query``; ``headers`` may carry Host and
    framing headers: they are dropped. ``host`` (a client's Host, forwarded) replaces the target's own.
    Content-Length is sent when there is a body or the method is not one that usually has none.
    """
    verb = method.upper().encode("ascii")
    hostport = host or target.hostport
    parts = [verb, b" ", target.base_path, path_qs.encode("utf-8"), b" HTTP/1.1\r\nHost: ", hostport]
    for name, value in headers:
        if name.lower() not in _DROP:
            parts += (b"\r\n", name, b": ", value)
    if body or verb not in IDEMPOTENT:
        parts.append(b"\r\nContent-Length: %d" % len(body))
    parts.append(b"\r\n\r\n")
    return b"".join(parts) + body


def build_get(
    base_path: bytes, hostport: bytes, target: bytes, header_block: bytes, host: bytes | None = None
) -> bytes:
    """A GET without a body for the upstream at ``hostport`` (its ``base_path`` prefixed to ``target``, a
    path and query as a request line carries them) from header lines already joined with CRLF (may be
    empty).

    The fast way for headers a gateway already holds as lines: the caller guarantees that none of them
    is Host, a framing or a hop-by-hop header (`build_request` drops those itself). ``host`` (a client's
    Host, forwarded) replaces the upstream's own. The target's parts come as values, not a
    `RequestTarget`: read through a Protocol, compiled code would look each up by name. One copy into
    the message (compiled, ``b"..." % (...)`` of bytes is one).
    """
    hostport = host or hostport
    if header_block:
        return b"GET %b%b HTTP/1.1\r\nHost: %b\r\n%b\r\n\r\n" % (base_path, target, hostport, header_block)
    return b"GET %b%b HTTP/1.1\r\nHost: %b\r\n\r\n" % (base_path, target, hostport)
