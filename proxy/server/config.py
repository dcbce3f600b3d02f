"""`GatewaySettings`: the data path's tunables, validated once. Pure: imports nothing that opens sockets.

`proxy.server.forwarding` (pure header rewriting) and `proxy.server.gateway` (live state, pools) both read
it; keeping it here lets the pure modules stay free of the upstream layer's I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    """Data-path settings; defaults suit a gateway behind no other proxy.

    ``trusted_hops``: how many proxies in front of the gateway are trusted (0: a client's
    X-Forwarded-* are discarded; N: the last N X-Forwarded-For entries are kept).
    ``via_token``: the received-by name in ``Via`` (a request already carrying it is a loop).
    Timeouts (seconds, decided by the listener's sweep): ``client_idle_timeout`` between requests,
    ``header_timeout`` from a head's first byte to its end, ``body_timeout`` from a head's first byte to
    its body's end (a body trickled in is cut: 408 if no response started). ``max_body_bytes``: the
    largest request body forwarded (0: no limit; a route's ``limits.max_body`` overrides it), answered
    413. ``max_connections``: client connections open at once (0: no limit); one more is answered 503
    and closed.
    """

    trusted_hops: int = 0
    via_token: str = "strangler"
    request_id_header: str = "X-Request-Id"
    max_header_bytes: int = 65536
    max_request_line: int = 8192
    client_idle_timeout: float = 75.0
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    max_body_bytes: int = 0
    max_connections: int = 0
    # Client-side write buffer above which the upstream is no longer read (slow-client backpressure).
    write_high_water: int = 256 * 1024
    # Request body bytes buffered while the upstream connection is being opened.
    pending_body_limit: int = 256 * 1024
    scheme: str = "http"

    def __post_init__(self) -> None:
        if self.trusted_hops < 0:
            raise ValueError(f"trusted_hops must be >= 0, got {self.trusted_hops}")
        if not self.via_token or any(c in self.via_token for c in " ,\t\r\n"):
            raise ValueError(f"via_token must be one token without spaces or commas, got {self.via_token!r}")
        for name in ("client_idle_timeout", "header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be greater than 0 seconds, got {getattr(self, name)}")
        if self.max_body_bytes < 0 or self.max_connections < 0:
            raise ValueError("max_body_bytes and max_connections must be 0 (no limit) or more")
        if self.max_header_bytes < 1024 or self.max_request_line < 64:
            raise ValueError("max_header_bytes must be >= 1024 and max_request_line >= 64")
