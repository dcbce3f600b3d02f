"""`Gateway`: the live state one request needs (route table, upstream pools, settings and hooks).

The data path reads ``gateway.table`` and ``gateway.pools`` once when a request starts, so a reload
(`set_table`) is atomic from a request's point of view: in-flight requests finish on the table and pool
they started with. Hooks (observer, access log, shadow) are called after a response has been sent and
their exceptions are swallowed, so they can never break a client's request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from proxy.routing.table import Route, RouteTable
from proxy.server.exchange import Exchange
from proxy.upstream.pool import UpstreamPool

__all__ = [
    "AccessRecord",
    "Gateway",
    "GatewaySettings",
    "NullObserver",
    "RequestObserver",
    "ShadowSink",
]

log = logging.getLogger("strangler.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    """Data-path settings; defaults suit a gateway behind no other proxy.

    ``trusted_hops``: how many proxies in front of the gateway are trusted (0: a client's
    X-Forwarded-* are discarded; N: the last N X-Forwarded-For entries are kept).
    ``via_token``: the received-by name in ``Via`` (a request already carrying it is a loop).
    """

    trusted_hops: int = 0
    via_token: str = "strangler"
    request_id_header: str = "X-Request-Id"
    max_header_bytes: int = 65536
    max_request_line: int = 8192
    client_idle_timeout: float = 75.0
    header_timeout: float = 30.0
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
        if self.max_header_bytes < 1024 or self.max_request_line < 64:
            raise ValueError("max_header_bytes must be >= 1024 and max_request_line >= 64")


class RequestObserver(Protocol):
    """Metrics hook: one call per finished request (status 0 when the client went away first)."""

    def observe(self, route: str, target: str, status: int, seconds: float) -> None: ...


class NullObserver:
    """The default observer: records nothing."""

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        """Ignore the observation."""


class ShadowSink(Protocol):
    """What the data path needs from shadowing (proxy/shadow.py implements it)."""

    @property
    def body_cap(self) -> int: ...

    def wants(self, route: Route, method: str) -> bool: ...

    def submit(self, exchange: Exchange) -> None: ...


class AccessRecord(NamedTuple):
    """One access-log line's worth of facts about a finished request."""

    # A NamedTuple, not a frozen dataclass: immutable either way, but a frozen dataclass's __init__
    # (object.__setattr__ per field) cost ~1 µs per request against ~0.25 µs here.

    request_id: str
    method: str
    path: str
    route: str
    target: str
    status: int
    duration_s: float
    bytes_in: int
    bytes_out: int
    peer: str


AccessLog = Callable[[AccessRecord], None]


class Gateway:
    """The state shared by every client connection of one gateway process."""

    def __init__(
        self,
        table: RouteTable,
        settings: GatewaySettings | None = None,
        *,
        observer: RequestObserver | None = None,
        shadow: ShadowSink | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.observer: RequestObserver = observer or NullObserver()
        self.shadow = shadow
        self.access_log = access_log
        self.table = table
        self.pools: Mapping[str, UpstreamPool] = {
            name: UpstreamPool(spec) for name, spec in table.upstreams.items()
        }

    def set_table(self, table: RouteTable) -> None:
        """Swap in a new route table and reconcile the pools (no await: atomic for requests).

        An upstream whose spec is unchanged keeps its pool (and warm connections); a new or changed one
        gets a new pool; a removed or replaced pool is retired: idle connections close now, busy ones
        after their response.
        """
        old = self.pools
        pools: dict[str, UpstreamPool] = {}
        for name, spec in table.upstreams.items():
            current = old.get(name)
            pools[name] = current if current is not None and current.spec == spec else UpstreamPool(spec)
        self.table = table
        self.pools = pools
        kept = {id(p) for p in pools.values()}
        for pool in old.values():
            if id(pool) not in kept:
                pool.close()

    def close(self) -> None:
        """Retire every pool (idle connections close now, busy ones when their response ends)."""
        for pool in self.pools.values():
            pool.close()

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        """Call the observer, never letting its failure reach the data path."""
        try:
            self.observer.observe(route, target, status, seconds)
        except Exception:
            log.exception("request observer failed")

    def submit_shadow(self, exchange: Exchange) -> None:
        """Hand an exchange to shadowing, never letting its failure reach the data path."""
        shadow = self.shadow
        if shadow is None:
            return
        try:
            shadow.submit(exchange)
        except Exception:
            log.exception("shadow submit failed")

    def log_access(self, record: AccessRecord) -> None:
        """Write one access-log record through the hook, if any."""
        hook = self.access_log
        if hook is None:
            return
        try:
            hook(record)
        except Exception:
            log.exception("access log hook failed")
