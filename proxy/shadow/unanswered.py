"""A shadow side that stops answering: counted, rate-limited warnings, and the streak the report reads. No I/O
of its own (it records into the store's in-memory batch).

When the side that did not serve a request (the *shadow* side) fails to answer its copy, the comparison is
lost; the client never notices. Without care that is a log line per request (about 240 a second when the
control stopped answering under load) and verdicts that do not change. Here instead:

- ``strangler_shadow_failures_total{route,side,kind}`` counts every failed shadow call (``kind`` is the
  upstream error kind: ``connect``, ``timeout``, ``protocol``, else ``error``);
- one warning line per route and side every ``WARN_EVERY_S`` at most, with the count since the last
  line and the last error, timed by an injected ``clock``;
- the current streak of consecutive failures is kept in the store as counters
  ``unanswered:<side>:<kind>``: incremented per failure and taken back to zero (a negative increment)
  when the side answers again or the shadower closes, so they add up across replicas and the report
  (``proxy.report.model``) can say "the shadow side (new) did not answer: timeout". A process that dies
  mid-streak leaves its part behind until the route's side answers through it again: a known limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from prometheus_client import Counter as PromCounter

from proxy.shadow.store import DiffStore

__all__ = ["FAILURES", "KINDS", "PREFIX", "WARN_EVERY_S", "Unanswered", "error_kind"]

log = logging.getLogger("strangler.shadow")

WARN_EVERY_S: Final = 5.0  # at most one warning line per route and side this often
PREFIX: Final = "unanswered:"  # store counter names: unanswered:<side>:<kind>
KINDS: Final = frozenset({"connect", "timeout", "protocol"})  # proxy.http1.errors.UpstreamErrorKind

FAILURES = PromCounter(
    "strangler_shadow_failures",
    "Shadow calls that got no answer, by route, side (legacy or new) and kind (connect, timeout, protocol, "
    "error).",
    ["route", "side", "kind"],
)


def error_kind(reason: str) -> str:
    """The kind of a failed call's reason (``"timeout: ..."`` gives ``timeout``); ``error`` otherwise."""
    kind = reason.partition(":")[0]
    return kind if kind in KINDS else "error"


class _Streak:
    __slots__ = ("key", "kinds", "last", "since_warning", "warned_at")

    def __init__(self, key: str) -> None:
        self.key = key  # the store key the streak is counted under (the route's epoch when it began)
        self.kinds: dict[str, int] = {}  # consecutive failures by kind, as recorded in the store
        self.last = ""
        self.since_warning = 0
        self.warned_at: float | None = None


class Unanswered:
    """Failed shadow calls per route and side: the metric, the warning lines and the stored streak."""

    def __init__(self, store: DiffStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self.down: dict[str, dict[str, _Streak]] = {}  # route -> side -> the current streak

    def failed(self, route: str, side: str, reason: str, key: str | None = None) -> None:
        """One shadow call of ``route`` to ``side`` got no answer (``reason`` says why); counted under
        the store ``key`` (the route's route-level key; its bare name by default)."""
        kind = error_kind(reason)
        FAILURES.labels(route, side, kind).inc()
        sides = self.down.get(route)
        if sides is None:
            sides = self.down[route] = {}
        streak = sides.get(side)
        if streak is None:
            streak = sides[side] = _Streak(route if key is None else key)
        streak.kinds[kind] = streak.kinds.get(kind, 0) + 1
        streak.last = reason
        streak.since_warning += 1
        self.store.count(streak.key, f"{PREFIX}{side}:{kind}")
        now = self._clock()
        if streak.warned_at is None or now - streak.warned_at >= WARN_EVERY_S:
            log.warning(
                "shadow side %s of route %s is not answering: %d shadow calls failed since the last such "
                "line (last: %s). Those requests are not compared (clients are not affected); check the "
                "%s upstream (strangler_shadow_failures_total counts every failure)",
                side, route, streak.since_warning, reason, side,
            )  # fmt: skip
            streak.warned_at = now
            streak.since_warning = 0

    def answered(self, route: str) -> None:
        """``route``'s shadow side answered: end its streak (a dict miss unless one is running)."""
        sides = self.down.pop(route, None)
        if sides is not None:
            self._end(route, sides, announce=True)

    def forget(self) -> None:
        """End every streak (the shadower is closing: the store must not keep this process's part)."""
        for route, sides in list(self.down.items()):
            self._end(route, sides, announce=False)
        self.down.clear()  # in place: the judge holds this dict

    def _end(self, route: str, sides: dict[str, _Streak], *, announce: bool) -> None:
        for side, streak in sides.items():
            for kind, n in streak.kinds.items():
                self.store.count(streak.key, f"{PREFIX}{side}:{kind}", -n)
            if announce and streak.warned_at is not None:
                log.info("shadow side %s of route %s answers again", side, route)
