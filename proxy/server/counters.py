"""What the data path counts, as plain ints, floats and dicts: `RequestCounts` and `DataPathCounters`.

`RequestCounts` is the per-request observer (``Gateway(observer=...)``): finished requests by (route,
target, status) and latency buckets by (route, target). It runs once per request, so it lives here, on the
compiled data path (`proxy.compiled`), and not in `proxy.ops.metrics`, which owns it (``RequestStats``) and
turns it into Prometheus metrics at scrape time.

`DataPathCounters`: refused connections (over ``max_connections``), gateway-made upstream errors by
(upstream, kind), each upstream's last connect outcome (up or down, and since when), requests served by
legacy in place of new by (route, reason), and each route's circuit-breaker state and transitions
(`proxy.server.fallback`). Updated only on the rare paths (a refusal, an error answered, a new upstream
connection), never per request; `proxy.ops.metrics` turns them into Prometheus metrics and `/readyz`
reports them. No I/O, no imports from above.
"""

from __future__ import annotations

import time
from typing import Any, Final

__all__ = ["BUCKETS", "Cells", "Counts", "DataPathCounters", "RequestCounts"]

# The request-duration histogram's upper bounds in seconds (strangler_request_duration_seconds).
BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_CELL: Final = len(BUCKETS) + 2
_SUM: Final = _CELL - 1  # a cell's last item: the sum of seconds

# (route, target) -> [count per bucket ... , count above the last bound, sum of seconds]
Cells = dict[tuple[str, str], list[float]]
# (route, target, status) -> count
Counts = dict[tuple[str, str, int], int]


class _Slot:
    """One (route, target, status)'s count, its key in `RequestCounts.counts` and its (route, target)'s
    cell."""

    __slots__ = ("cell", "key", "n")

    def __init__(self, key: object, cell: list[float]) -> None:
        # `object`, not tuple[str, str, int]: mypyc keeps the latter unboxed and would box a new tuple
        # each time it is read.
        self.key = key
        self.cell = cell
        self.n = 0


class RequestCounts:
    """Finished requests: counts by (route, target, status), latency buckets by (route, target).

    Scrapes read `counts` and copy ``cells`` from another thread (`proxy.ops.metrics.local_registry`):
    ``cells`` and the slot list are only ever added to, never replaced, and ``observe`` alone writes them.
    """

    __slots__ = ("_all", "_slots", "cells")

    def __init__(self) -> None:
        self.cells: Cells = {}
        # Every slot, in the order made: `counts` reads their counts. A count lives in its slot only:
        # storing it in a dict keyed by (route, target, status) as well cost a boxed int and a tuple
        # hashed per request (callgrind: ~350 instructions).
        self._all: list[_Slot] = []
        # route -> target -> status -> its slot: three look-ups by keys that hash and compare in a few
        # instructions (the route's and target's names are the same str objects request after request),
        # where the tuple keys of ``counts`` and ``cells`` were built, hashed and compared item by item for
        # two gets and a set (callgrind: ~1,400 instructions a request).
        self._slots: dict[str, dict[str, dict[int, _Slot]]] = {}

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        """Record one finished request (the data path calls this once per request)."""
        by_target = self._slots.get(route)
        if by_target is None:
            by_target = self._slots[route] = {}
        by_status = by_target.get(target)
        if by_status is None:
            by_status = by_target[target] = {}
        slot = by_status.get(status)
        if slot is None:
            slot = by_status[status] = self._slot(route, target, status)
        slot.n += 1
        cell = slot.cell
        # The first bound not below the value (le is inclusive), as bisect_left would find it: compiled, this
        # loop over native floats is ~100 ns cheaper than the call, and a request is rarely past the third.
        index = 0
        for bound in BUCKETS:
            if seconds <= bound:
                break
            index += 1
        # Spelled out, not `+=`: compiled, these add native floats; `cell[index] += 1` went through
        # PyNumber_InPlaceAdd on the boxed items (callgrind: ~300 instructions a request more).
        cell[index] = cell[index] + 1.0
        cell[_SUM] = cell[_SUM] + seconds

    def counts(self) -> Counts:
        """The counts by (route, target, status), a new dict: safe to call from another thread (the slot
        list is copied in one step, and each count is read whole under the GIL)."""
        counts: dict[Any, int] = {}
        for slot in list(self._all):
            counts[slot.key] = slot.n
        return counts

    def _slot(self, route: str, target: str, status: int) -> _Slot:
        """A new slot: its count's key, and the (route, target)'s cell, made on its first request."""
        cell = self.cells.get((route, target))
        if cell is None:
            cell = self.cells[(route, target)] = [0.0] * _CELL
        slot = _Slot((route, target, status), cell)
        self._all.append(slot)
        return slot


class DataPathCounters:
    """Counters of one serving process (a worker's are summed by the supervisor from snapshots)."""

    __slots__ = (
        "circuit_since",
        "circuit_state",
        "circuit_transitions",
        "fallbacks",
        "refused_connections",
        "upstream_errors",
        "upstream_up",
    )

    def __init__(self) -> None:
        self.refused_connections = 0
        self.upstream_errors: dict[tuple[str, str], int] = {}  # (upstream, kind) -> count
        self.upstream_up: dict[str, tuple[bool, float]] = {}  # upstream -> (up, since: unix time)
        self.fallbacks: dict[tuple[str, str], int] = {}  # (route, reason) -> requests served by legacy
        self.circuit_state: dict[str, str] = {}  # route -> closed, open or half_open
        self.circuit_since: dict[str, float] = {}  # route -> when it entered that state (unix time)
        self.circuit_transitions: dict[tuple[str, str], int] = {}  # (route, to) -> count

    def fallback(self, route: str, reason: str) -> None:
        """Count a request of ``route`` served by legacy instead of new (``reason``: why)."""
        key = (route, reason)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def circuit_changed(self, route: str, state: str, to: str | None) -> None:
        """``route``'s breaker is now in ``state``; ``to`` (the same) counts a transition, None does not."""
        self.circuit_state[route] = state
        self.circuit_since[route] = time.time()
        if to is not None:
            key = (route, to)
            self.circuit_transitions[key] = self.circuit_transitions.get(key, 0) + 1

    def upstream_failed(self, upstream: str, kind: str, connecting: bool) -> None:
        """Count an error the gateway answered for ``upstream``; a failed connect also marks it down."""
        key = (upstream, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1
        if connecting:
            self._set(upstream, False)

    def upstream_connected(self, upstream: str) -> None:
        """A new connection to ``upstream`` opened: it is up (a dict lookup unless it changed)."""
        state = self.upstream_up.get(upstream)
        if state is None or not state[0]:
            self._set(upstream, True)

    def _set(self, upstream: str, up: bool) -> None:
        state = self.upstream_up.get(upstream)
        if state is None or state[0] != up:
            self.upstream_up[upstream] = (up, time.time())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (what a worker writes for the supervisor; see `merge`)."""
        return {
            "refused_connections": self.refused_connections,
            "upstream_errors": [[u, k, n] for (u, k), n in self.upstream_errors.items()],
            "upstream_up": [[u, up, since] for u, (up, since) in self.upstream_up.items()],
            "fallbacks": [[r, why, n] for (r, why), n in self.fallbacks.items()],
            "circuit": [[r, s, self.circuit_since.get(r, 0.0)] for r, s in self.circuit_state.items()],
            "circuit_transitions": [[r, to, n] for (r, to), n in self.circuit_transitions.items()],
        }

    def merge(self, snap: dict[str, Any]) -> None:
        """Add another process's snapshot: counts summed, the most recent up/down state kept."""
        self.refused_connections += int(snap.get("refused_connections", 0))
        for upstream, kind, n in snap.get("upstream_errors", []):
            key = (str(upstream), str(kind))
            self.upstream_errors[key] = self.upstream_errors.get(key, 0) + int(n)
        for upstream, up, since in snap.get("upstream_up", []):
            have = self.upstream_up.get(upstream)
            if have is None or float(since) > have[1]:
                self.upstream_up[str(upstream)] = (bool(up), float(since))
        for route, why, n in snap.get("fallbacks", []):
            key = (str(route), str(why))
            self.fallbacks[key] = self.fallbacks.get(key, 0) + int(n)
        for route, to, n in snap.get("circuit_transitions", []):
            key = (str(route), str(to))
            self.circuit_transitions[key] = self.circuit_transitions.get(key, 0) + int(n)
        for route, state, since in snap.get("circuit", []):
            # Each process has its own breaker: the merged state is the worst one (open, then half-open).
            current = self.circuit_state.get(str(route))
            if current is None or _SEVERITY.get(str(state), 0) > _SEVERITY.get(current, 0):
                self.circuit_state[str(route)] = str(state)
                self.circuit_since[str(route)] = float(since)


_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}
