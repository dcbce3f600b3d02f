"""`Breaker`: one route's circuit breaker on new, as a pure state machine with an injected clock.

Named states, as h11 does it: ``CLOSED`` (new serves the route; each result is counted), ``OPEN`` (new
failed too much: its requests go to legacy without a connect attempt for ``cool_down_s``), ``HALF_OPEN``
(the cool-down passed: up to ``half_open`` probe requests go to new; all of them succeeding closes the
circuit, one failing opens it again). Events in: `admit` before a new-bound request is sent, `record`
with its outcome, `release` when an admitted probe ends without one (its client went away). No I/O, no
timers: the clock is read when an event arrives, so tests move time by hand.

The state is process-local: each gateway process (worker) opens its own breaker from what it sees, which
needs no coordination and reacts as fast as the process's own traffic; a dead new service is seen by all
of them within a few requests each.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from proxy.routing.model import BreakerSpec

__all__ = ["CLOSED", "DENY", "HALF_OPEN", "NORMAL", "OPEN", "PROBE", "STATE_NAMES", "Breaker"]

CLOSED = 0
OPEN = 1
HALF_OPEN = 2
STATE_NAMES = ("closed", "open", "half_open")

# What `admit` answers: send it to legacy; send it to new; send it to new as a half-open probe.
DENY = 0
NORMAL = 1
PROBE = 2

_BUCKETS = 10  # the failure-rate window is kept as this many time buckets, not one entry per request


class Breaker:
    """A circuit breaker; ``on_change(old, new)`` is called once per transition (log it, count it)."""

    __slots__ = (
        "_buckets",
        "_clock",
        "_on_change",
        "_width",
        "consecutive",
        "opened_at",
        "probes_ok",
        "probes_out",
        "spec",
        "state",
    )

    def __init__(
        self,
        spec: BreakerSpec,
        clock: Callable[[], float],
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._on_change = on_change
        self.state = CLOSED
        self.consecutive = 0  # failures in a row while closed
        self.opened_at = 0.0
        self.probes_out = 0  # half-open probes admitted (finished or not)
        self.probes_ok = 0
        self._width = spec.window_s / _BUCKETS
        # (bucket index, requests, failures), oldest first; at most _BUCKETS + 1 entries.
        self._buckets: collections.deque[list[int]] = collections.deque()

    def admit(self) -> int:
        """May a new-bound request go to new? `NORMAL`, `PROBE` (half-open), or `DENY` (send it to legacy)."""
        state = self.state
        if state == CLOSED:
            return NORMAL
        if state == OPEN:
            if self._clock() - self.opened_at < self.spec.cool_down_s:
                return DENY
            self._move(HALF_OPEN)
        if self.probes_out < self.spec.half_open:
            self.probes_out += 1
            return PROBE
        return DENY

    def record(self, ok: bool, probe: bool) -> None:
        """The outcome of a request `admit` let through (``probe``: it was admitted as one)."""
        state = self.state
        if state == HALF_OPEN:
            if not probe:
                return  # a request sent before the circuit opened: says nothing about new now
            if not ok:
                self._open()
                return
            self.probes_ok += 1
            if self.probes_ok >= self.spec.half_open:
                self._move(CLOSED)
            return
        if state == OPEN:
            return  # late results of requests sent before it opened
        self._count(ok)

    def release(self, probe: bool) -> None:
        """An admitted request ended without an outcome (the client left): its probe slot is free again."""
        if probe and self.state == HALF_OPEN and self.probes_out > self.probes_ok:
            self.probes_out -= 1

    def _count(self, ok: bool) -> None:
        spec = self.spec
        if ok:
            self.consecutive = 0
        else:
            self.consecutive += 1
        index = int(self._clock() / self._width)
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _BUCKETS:
            buckets.popleft()
        if buckets and buckets[-1][0] == index:
            bucket = buckets[-1]
        else:
            bucket = [index, 0, 0]
            buckets.append(bucket)
        bucket[1] += 1
        if ok:
            return
        bucket[2] += 1
        if spec.consecutive and self.consecutive >= spec.consecutive:
            self._open()
            return
        total = sum(b[1] for b in buckets)
        if total >= spec.min_requests and sum(b[2] for b in buckets) >= spec.failure_rate * total:
            self._open()

    def _open(self) -> None:
        self.opened_at = self._clock()
        self._move(OPEN)

    def _move(self, to: int) -> None:
        old = self.state
        self.state = to
        self.probes_out = 0
        self.probes_ok = 0
        if to == CLOSED:
            self.consecutive = 0
            self._buckets.clear()
        if old != to and self._on_change is not None:
            self._on_change(old, to)
