"""Fallback to legacy and the circuit breaker on new: the per-route `Guard` and the per-request `Attempt`.

A route with ``fallback:`` or ``circuit_breaker:`` (`proxy.routing.resilience`) has a `Guard` in the
gateway (``Gateway.guards``, by route name, rebuilt on reload; a breaker whose spec did not change keeps
its state). A request whose pool is new (``pool.name == "new"``, whatever the route's target says: a
canary picks the pool per request) on such a route carries an `Attempt`: whether the breaker admitted it
(and as a probe), a copy of its body when it may have to be sent again, the fallback timer, and, once it
fell back, why (``connect``, ``timeout``, ``reset``, ``5xx`` or ``circuit``). `Responder` does the I/O;
what is decided here is pure.

What may fall back (never twice, never after a response byte reached the client):
- ``connect``: new refused or did not accept the connection; any method: nothing reached new. The
  body must still be in hand (``rq.pending``: the head was never sent) or be empty.
- ``timeout`` (no response byte within ``timeout`` s) and ``reset`` (new closed the connection without
  answering): the request may have reached new, so only an idempotent method (RFC 9110 9.2.2: GET, HEAD,
  OPTIONS, TRACE, PUT, DELETE) whose body was complete and kept (at most the pending-body limit).
- ``5xx`` (``on_5xx``): the same, decided at the response head, before any of it is written.
- ``circuit``: the breaker is open; the request never goes to new.

The breaker counts a connect error, a timeout, a reset, and a 5xx when ``on_5xx`` is on (then the
operator said a 5xx is new failing) as failures; any other answer is a success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from proxy.routing.table import Route
from proxy.server.breaker import NORMAL, OPEN, PROBE, STATE_NAMES, Breaker
from proxy.server.counters import DataPathCounters
from proxy.upstream.pool import UpstreamPool

__all__ = [
    "FALLBACK_HEADER",
    "IDEMPOTENT",
    "Attempt",
    "Guard",
    "build_guards",
    "request_prefix",
]

log = logging.getLogger("strangler.server")

FALLBACK_HEADER = b"X-Strangler-Fallback: "
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class Guard:
    """One route's fallback settings and circuit breaker in this process."""

    __slots__ = ("breaker", "connect", "count_5xx", "name", "on_5xx", "timeout")

    def __init__(self, route: Route, breaker: Breaker | None) -> None:
        self.name = route.name
        spec = route.fallback
        self.connect = spec is not None and spec.connect
        self.timeout = spec.timeout if spec is not None else 0.0
        self.on_5xx = spec is not None and spec.on_5xx
        self.count_5xx = self.on_5xx  # whether a 5xx is a failure for the breaker
        self.breaker = breaker


class Attempt:
    """A new-bound request's fallback state (``Request.guard``)."""

    __slots__ = ("admitted", "content_length", "guard", "kept", "kept_size", "reason", "settled", "timer")

    def __init__(self, guard: Guard, method: bytes, content_length: int | None, has_body: bool) -> None:
        self.guard = guard
        self.admitted = NORMAL  # what the breaker said (`proxy.server.breaker`), set when it starts
        self.content_length = content_length  # to frame the head again for legacy
        # The body as sent, kept for a resend when the request is idempotent and fall-back-able after it
        # reached new; None: not kept (not needed, not allowed, or over the limit).
        self.kept: list[bytes] | None = (
            [] if has_body and method in IDEMPOTENT and (guard.timeout > 0 or guard.on_5xx) else None
        )
        self.kept_size = 0
        self.reason = ""  # why it was served by legacy; "" while it is new's
        self.settled = False  # the breaker heard its outcome (or it was never new's)
        self.timer: asyncio.TimerHandle | None = None  # the timeout fallback's

    def stop_timer(self) -> None:
        """Cancel the timeout fallback (a response byte arrived, or the request moved on)."""
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def keep(self, data: bytes, limit: int) -> None:
        """Copy body bytes sent on (stops, and forgets them, past ``limit``: then no resend)."""
        kept = self.kept
        if kept is not None:
            self.kept_size += len(data)
            if self.kept_size > limit:
                self.kept = None
            else:
                kept.append(data)

    def settle(self, ok: bool) -> None:
        """Tell the breaker this request's outcome on new, once."""
        if self.settled:
            return
        self.settled = True
        breaker = self.guard.breaker
        if breaker is not None:
            breaker.record(ok, self.admitted == PROBE)

    def abandon(self) -> None:
        """The request ended with no outcome on new (its client went away): free a probe slot."""
        if not self.settled:
            self.settled = True
            breaker = self.guard.breaker
            if breaker is not None:
                breaker.release(self.admitted == PROBE)


def request_prefix(method: bytes, pool: UpstreamPool, forward_path: str, query: str) -> bytes:
    """The upstream request line (and Host for a ``host: upstream`` pool), as `RouteCache.lookup` makes it."""
    target = pool.base_path + forward_path.encode("utf-8")
    if query:
        target += b"?" + query.encode("utf-8")
    if pool.client_host:
        return b"%s %s HTTP/1.1\r\n" % (method, target)
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, pool.hostport)


def build_guards(
    routes: list[Route], old: Mapping[str, Guard], counters: DataPathCounters, clock: Callable[[], float]
) -> dict[str, Guard]:
    """The guards of a table's routes that have a fallback or a breaker; an unchanged breaker is kept."""
    guards: dict[str, Guard] = {}
    for route in routes:
        if route.fallback is None and route.breaker is None:
            continue
        previous = old.get(route.name)
        breaker: Breaker | None = None
        if route.breaker is not None:
            kept = previous.breaker if previous is not None else None
            if kept is not None and kept.spec == route.breaker:
                breaker = kept
            else:
                breaker = Breaker(route.breaker, clock, _announcer(route.name, counters))
                counters.circuit_changed(route.name, STATE_NAMES[0], None)
        guards[route.name] = Guard(route, breaker)
    return guards


def _announcer(route: str, counters: DataPathCounters) -> Callable[[int, int], None]:
    """Log and count one breaker's transitions (once each: the breaker calls it on a change only)."""

    def changed(old: int, new: int) -> None:
        counters.circuit_changed(route, STATE_NAMES[new], STATE_NAMES[new])
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(
            level,
            f"circuit {STATE_NAMES[new]} for route {route}",
            extra={
                "fields": {
                    "event": "circuit_" + STATE_NAMES[new],
                    "route": route,
                    "from": STATE_NAMES[old],
                    "to": STATE_NAMES[new],
                    "at": time.time(),
                }
            },
        )

    return changed
