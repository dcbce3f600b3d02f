"""`Gateway`: the live state one request needs (route table, upstream pools, settings and hooks).

The data path reads ``gateway.table`` and ``gateway.pools`` once when a request starts, so a reload
(`set_table`) is atomic from a request's point of view: in-flight requests finish on the table and pool
they started with. Hooks (observer, access log, shadow) are called after a response has been sent and
their exceptions are swallowed, so they can never break a client's request. ``counters``
(`DataPathCounters`) count refused connections and upstream errors. `GatewaySettings` lives in
the pure `proxy.server.config` and is re-exported here for the callers that build a `Gateway`. ``guards``
holds the fallback and circuit-breaker state of the routes that have one (`proxy.server.fallback`), by
route name; ``clock`` (monotonic seconds) is what the breakers read, injected by tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

from proxy.compiled import mypyc_attr
from proxy.routing.table import Route, RouteTable
from proxy.server.canary import FULL
from proxy.server.config import GatewaySettings
from proxy.server.counters import DataPathCounters, RequestCounts
from proxy.server.exchange import Exchange
from proxy.server.fallback import Guard, build_guards
from proxy.upstream.pool import UpstreamPool

__all__ = [
    "AccessRecord",
    "DataPathCounters",
    "Gateway",
    "GatewaySettings",
    "NullObserver",
    "RequestObserver",
    "ShadowSink",
]

log = logging.getLogger("strangler.gateway")


class RequestObserver(Protocol):
    """Metrics hook: one call per finished request (status 0 when the client went away first)."""

    def observe(self, route: str, target: str, status: int, seconds: float) -> None: ...


class NullObserver:
    """The default observer: records nothing."""

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        """Ignore the observation."""


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; the tests' shadows subclass it in Python
class ShadowSink:
    """What the data path needs from shadowing (proxy/shadow/admission.py's `Shadower` subclasses it).

    ``body_cap`` is how much of each body the data path tees for comparison. ``prewrite`` is asked, for a
    sampled request other than GET/HEAD, once its body is complete and before it is forwarded: it sends
    the dry run and returns a handle (attached to the exchange later), or None when it will not (the
    request is forwarded at once). ``done()`` is then called exactly once, when the dry run has answered,
    failed or timed out (at most the route's shadow timeout), and only then is the primary forwarded
    (`proxy.server.holding`). ``fallback(route, reason)`` counts a request sent to new but served by
    legacy (`proxy.server.fallback`), for the report.

    A base class, not a Protocol: the compiled data path calls ``wants`` and ``submit`` per request, natively
    on the compiled `Shadower` (a Protocol's methods are called by name).
    """

    def __init__(self, body_cap: int) -> None:
        self.body_cap = body_cap

    def wants(self, route: Route, method: str, primary: str = "") -> bool:
        raise NotImplementedError  # the default as the subclasses have it: compiled, no glue per call

    def submit(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def not_comparable(self, route: Route, reason: str) -> None:
        raise NotImplementedError

    def fallback(self, route: Route, reason: str) -> None:
        raise NotImplementedError

    def prewrite(
        self, route: Route, method: str, path_qs: str, lines: list[bytes], body: bytes,
        host: bytes | None, done: Callable[[], None],
    ) -> object | None:  # fmt: skip
        raise NotImplementedError


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
        counters: DataPathCounters | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.counters = counters or DataPathCounters()
        self.observer: RequestObserver = observer or NullObserver()
        # The same observer when it is the metrics' compiled `RequestCounts`, typed as such: compiled, the
        # data path then calls its observe directly, where a call through the Protocol looks the method up
        # by name and parses its arguments (callgrind: ~450 instructions a request). Both are set here only.
        self.request_counts: RequestCounts | None = (
            observer if isinstance(observer, RequestCounts) else None
        )
        self.shadow = shadow
        self.access_log = access_log
        self.table = table
        self.pools: Mapping[str, UpstreamPool] = {
            name: UpstreamPool(spec) for name, spec in table.upstreams.items()
        }
        self.clock: Callable[[], float] = clock or time.monotonic
        self.guards: dict[str, Guard] = build_guards(
            [*table.routes, table.default], {}, self.counters, self.clock
        )
        # Route name -> basis points (0..10000) of requests new serves, for `target: auto` routes; an auto
        # route absent is at stage 0 (legacy serves, new is shadowed). Written by the rollout controller's
        # sync task (`set_stages`, or in place), read per request by the data path (proxy.server.canary).
        self.stages: dict[str, int] = {}

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
        self.guards = build_guards([*table.routes, table.default], self.guards, self.counters, self.clock)
        self.table = table
        self.pools = pools
        kept = {id(p) for p in pools.values()}
        for pool in old.values():
            if id(pool) not in kept:
                pool.close()

    def set_stages(self, stages: Mapping[str, object]) -> None:
        """Replace every route's stage at once (no await: atomic for requests); ValueError, and the
        stages unchanged, when one is not an int from 0 to 10000 (typed ``object``: checked here, also
        compiled, where an ``int`` parameter would reject a float with a TypeError before the check)."""
        fresh: dict[str, int] = {}
        for name, stage in stages.items():
            if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= FULL:
                raise ValueError(f"route {name!r}: a stage is 0..{FULL} basis points; got {stage!r}")
            fresh[name] = stage
        self.stages = fresh

    def stage_of(self, name: str) -> int:
        """Route ``name``'s stage in basis points of requests new serves (0: absent)."""
        return self.stages.get(name, 0)

    def close(self) -> None:
        """Retire every pool (idle connections close now, busy ones when their response ends)."""
        for pool in self.pools.values():
            pool.close()

    def log_access(self, record: AccessRecord) -> None:
        """Write one access-log record through the hook, if any."""
        hook = self.access_log
        if hook is None:
            return
        try:
            hook(record)
        except Exception:
            log.exception("access log hook failed")
