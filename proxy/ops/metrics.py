"""Prometheus metrics for the gateway, cheap on the hot path and summed across worker processes.

Request counts and latencies are the hot path (one call per request at tens of thousands a second), so
:class:`RequestStats` keeps them in plain dicts of ints and floats (``RequestCounts``, compiled with the
data path: the gateway's observer is ``stats.requests``) and a collector turns them into
``strangler_requests_total`` and ``strangler_request_duration_seconds`` at scrape time. With
``--workers N`` each worker writes a JSON snapshot of its stats into a private directory about once a
second (and when it stops) and the parent's collector sums the snapshots.

Everything else (reload results, the shadow helper's metrics) uses ordinary prometheus_client metrics on
the default registry. With workers, :func:`enable_multiprocess` switches prometheus_client to its
multiprocess mode before any worker starts, and the parent scrapes with a ``MultiProcessCollector``.
Other modules register metrics the usual way (``Counter(...)`` on the default registry); gauges must pass
a ``multiprocess_mode``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from proxy.server.breaker import STATE_NAMES as CIRCUIT_STATES
from proxy.server.counters import BUCKETS, Cells, Counts, DataPathCounters, RequestCounts

SNAPSHOT_PREFIX = "requests-"

RELOADS = Counter(
    "strangler_reload", "Routes file reloads by result (success, failure).", ["result"], registry=REGISTRY
)

class RequestStats:
    """The request observer: counts by (route, target, status), latency buckets by (route, target)."""

    __slots__ = ("cells", "data_path", "ident", "requests")

    def __init__(self) -> None:
        # Names this process's snapshot file; the random part keeps a reused pid from overwriting the
        # counts of a dead worker (counters must never go backwards).
        self.ident = f"{os.getpid()}-{secrets.token_hex(4)}"
        # The per-request half, compiled: the gateway's observer (`proxy.ops.serve.build_gateway`).
        self.requests = RequestCounts()
        self.cells: Cells = self.requests.cells  # the same dict, never replaced
        # Refused connections and upstream errors: the data path updates them (Gateway(counters=...)).
        self.data_path = DataPathCounters()

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        """Record one finished request (the gateway calls ``requests.observe`` itself: one call fewer)."""
        self.requests.observe(route, target, status, seconds)

    def counts(self) -> Counts:
        """The counts by (route, target, status): a new dict, safe to take from another thread."""
        return self.requests.counts()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the stats (what a worker writes for the parent)."""
        return {
            "counts": [[r, t, s, n] for (r, t, s), n in self.counts().items()],
            "cells": [[r, t, list(cell)] for (r, t), cell in self.cells.items()],
            "data_path": self.data_path.snapshot(),
        }

    def write_snapshot(self, directory: Path) -> None:
        """Atomically replace this process's snapshot file in ``directory``."""
        final = directory / f"{SNAPSHOT_PREFIX}{self.ident}.json"
        tmp = directory / f".{final.name}.tmp"
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, final)


def merge_snapshots(snapshots: Iterable[dict[str, Any]]) -> tuple[Counts, Cells]:
    """Sum snapshots from several processes."""
    counts: Counts = {}
    cells: Cells = {}
    for snap in snapshots:
        for r, t, s, n in snap["counts"]:
            key = (r, t, int(s))
            counts[key] = counts.get(key, 0) + int(n)
        for r, t, cell in snap["cells"]:
            have = cells.get((r, t))
            cells[(r, t)] = list(cell) if have is None else [a + b for a, b in zip(have, cell, strict=True)]
    return counts, cells


def merge_data_path(snapshots: Iterable[dict[str, Any]]) -> DataPathCounters:
    """Sum the data-path counters of several processes (the latest up/down state per upstream wins)."""
    total = DataPathCounters()
    for snap in snapshots:
        if "data_path" in snap:
            total.merge(snap["data_path"])
    return total


def read_snapshots(directory: Path) -> list[dict[str, Any]]:
    """Every worker snapshot in ``directory`` (a file being replaced is skipped until next scrape)."""
    out = []
    for path in sorted(directory.glob(f"{SNAPSHOT_PREFIX}*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


class RequestCollector(Collector):
    """Expose request stats from ``source()`` (one process's stats or every worker's snapshots)."""

    def __init__(self, source: Callable[[], tuple[Counts, Cells]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """Yield the request counter and the latency histogram."""
        counts, cells = self._source()
        requests = CounterMetricFamily(
            "strangler_requests",
            "Requests by route, target and status.",
            labels=["route", "target", "status"],
        )
        for (route, target, status), n in sorted(counts.items()):
            requests.add_metric([route, target, str(status)], n)
        yield requests
        duration = HistogramMetricFamily(
            "strangler_request_duration_seconds",
            "Request latency (first byte in to last byte out) by route and target.",
            labels=["route", "target"],
        )
        for (route, target), cell in sorted(cells.items()):
            cumulative: list[tuple[str, float]] = []
            running = 0.0
            for bound, hits in zip((*[repr(b) for b in BUCKETS], "+Inf"), cell[:-1], strict=True):
                running += hits
                cumulative.append((bound, running))
            duration.add_metric([route, target], cumulative, cell[-1])
        yield duration


class DataPathCollector(Collector):
    """Expose `DataPathCounters` from ``source()``: refused connections, upstream errors and up/down."""

    def __init__(self, source: Callable[[], DataPathCounters]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """Yield the refused-connection and upstream-error counters and the upstream-up gauge."""
        counters = self._source()
        refused = CounterMetricFamily(
            "strangler_connections_refused",
            "Client connections refused (503) because --max-connections were open.",
        )
        refused.add_metric([], counters.refused_connections)
        yield refused
        errors = CounterMetricFamily(
            "strangler_upstream_errors",
            "Upstream errors by upstream and kind (connect, timeout, protocol): answered 502/504 by the "
            "gateway, or served by legacy in new's place (see strangler_fallbacks_total).",
            labels=["upstream", "kind"],
        )
        for (upstream, kind), n in sorted(counters.upstream_errors.items()):
            errors.add_metric([upstream, kind], n)
        yield errors
        up = GaugeMetricFamily(
            "strangler_upstream_up",
            "1 if the data path's latest connect to the upstream succeeded, 0 if it failed.",
            labels=["upstream"],
        )
        for upstream, (is_up, _since) in sorted(counters.upstream_up.items()):
            up.add_metric([upstream], 1.0 if is_up else 0.0)
        yield up
        yield from _resilience_metrics(counters)


def _resilience_metrics(counters: DataPathCounters) -> Iterator[Metric]:
    """Fallbacks to legacy, and each circuit breaker's state and transitions (`proxy.server.fallback`)."""
    fallbacks = CounterMetricFamily(
        "strangler_fallbacks",
        "Requests of a route sent to new but served by legacy, by reason (connect, timeout, reset, 5xx, "
        "circuit: the breaker was open).",
        labels=["route", "reason"],
    )
    for (route, reason), n in sorted(counters.fallbacks.items()):
        fallbacks.add_metric([route, reason], n)
    yield fallbacks
    state = GaugeMetricFamily(
        "strangler_circuit_state",
        "A route's circuit breaker on new: 0 closed, 1 open (legacy serves it), 2 half-open (probing); "
        "with several workers, the worst of theirs.",
        labels=["route"],
    )
    for route, name in sorted(counters.circuit_state.items()):
        state.add_metric([route], float(CIRCUIT_STATES.index(name)) if name in CIRCUIT_STATES else 0.0)
    yield state
    transitions = CounterMetricFamily(
        "strangler_circuit_transitions",
        "Circuit-breaker transitions by route and the state entered (open, half_open, closed).",
        labels=["route", "to"],
    )
    for (route, to), n in sorted(counters.circuit_transitions.items()):
        transitions.add_metric([route, to], n)
    yield transitions


class _Chain(Collector):
    """Yield every metric of another registry (so one scrape can add collectors without re-registering)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Collect from the wrapped registry."""
        yield from self._registry.collect()


def enable_multiprocess(directory: Path) -> None:
    """Switch prometheus_client to multiprocess mode, writing into ``directory`` (parent, before workers).

    The env variable is inherited by workers; setting ``ValueClass`` covers metrics created later in this
    process even though prometheus_client was imported before the variable was set.
    """
    (directory / "prom").mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "prom")
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped library


def local_registry(stats: RequestStats) -> CollectorRegistry:
    """The scrape registry of a single-process gateway: its own stats plus the default registry."""
    registry = CollectorRegistry(auto_describe=False)

    def source() -> tuple[Counts, Cells]:
        # Scrapes render in a thread while the loop keeps observing: dict() and list() copies are single
        # C calls under the GIL, so copy the containers first and iterate only the copies (`counts` makes
        # a new dict itself).
        return stats.counts(), {k: list(v) for k, v in dict(stats.cells).items()}

    registry.register(RequestCollector(source))
    registry.register(DataPathCollector(lambda: stats.data_path))
    registry.register(_Chain(REGISTRY))
    return registry


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """The parent's scrape registry: every worker's snapshots plus prometheus multiprocess files."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(lambda: merge_snapshots(read_snapshots(directory))))
    registry.register(DataPathCollector(lambda: merge_data_path(read_snapshots(directory))))
    MultiProcessCollector(registry, path=str(directory / "prom"))  # type: ignore[no-untyped-call]  # untyped
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
