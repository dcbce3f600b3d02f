"""Where shadow-comparison results go, as types: the ``DiffStore`` protocol, ``Sample``, ``RouteStats``,
latency buckets, and ``Recording``, the synchronous half every store shares. No I/O here.

Recording is synchronous and only touches memory (a ``Batch``); a store's ``flush()`` writes the batch
off the hot path. The real store is ``proxy.shadow.redis_pg.RedisPgStore``: counters and latency
histograms in Redis (``proxy.shadow.redis_counters``), differing samples in PostgreSQL
(``proxy.shadow.pg_samples``, table ``strangler.shadow_diffs``, the gateway's own schema in
``proxy/shadow/schema``). Latencies go into fixed logarithmic buckets (hash fields), which add up across
replicas and still give p50/p99. Distinct paths and signatures are capped per route in Redis, and
samples per route and per diff signature in PostgreSQL. A storage failure is logged and counted, never
raised.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from prometheus_client import Counter as PromCounter

__all__ = [
    "DEFAULT_PREFIX",
    "STORE_ERRORS",
    "Batch",
    "DiffStore",
    "PathCounts",
    "Recording",
    "RouteStats",
    "Sample",
    "StoreError",
    "bucket_of",
    "bucket_upper",
    "method_field",
    "path_counts",
]

DEFAULT_PREFIX: Final = "strangler:shadow:"

STORE_ERRORS = PromCounter("strangler_shadow_store_errors", "Shadow storage writes that failed.", ["part"])

# Latency buckets: upper bound 0.1 ms * 1.15**i; 15 % resolution from 0.1 ms to about half an hour.
_BASE: Final = 1e-4
_RATIO: Final = 1.15
_LAST: Final = 120
_BUCKET_KEYS: Final = tuple(str(i) for i in range(_LAST + 1))  # Redis hash fields, made once
_LAT_KEYS: Final = {"control": "lat:control", "candidate": "lat:candidate"}


def bucket_upper(index: int) -> float:
    """The upper bound in seconds of bucket ``index``."""
    return _BASE * _RATIO**index


_UPPERS: Final = tuple(bucket_upper(i) for i in range(_LAST + 1))


def bucket_of(seconds: float) -> int:
    """The histogram bucket holding ``seconds`` (the first whose upper bound is not below it)."""
    return min(_LAST, bisect.bisect_left(_UPPERS, seconds))


class StoreError(Exception):
    """The stores can be reached but not used as expected; the message says what to do."""


@dataclass(frozen=True)
class Sample:
    """One differing (or failed) exchange, already redacted and truncated, ready to store."""

    route: str
    signature: str
    method: str
    path: str
    primary: str
    control_status: int | None
    candidate_status: int | None
    diff: list[dict[str, Any]]
    control_body: str = ""
    candidate_body: str = ""
    control_ms: float | None = None
    candidate_ms: float | None = None
    control_error: str | None = None
    candidate_error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class PathCounts:
    """What learning noise and generated fields needs for one route and method (see proxy.shadow.noise).

    ``compared``: comparisons (raced ones left out); ``aa_pairs``: A/A pairs made; per normalised path:
    ``aa`` A/A differences, ``candidate`` control-vs-candidate differences, ``same_shape`` value
    differences where both sides had the same generated shape (proxy.shadow.shapes).
    """

    compared: int = 0
    aa_pairs: int = 0
    aa: dict[str, int] = field(default_factory=dict)
    candidate: dict[str, int] = field(default_factory=dict)
    same_shape: dict[str, int] = field(default_factory=dict)


def method_field(method: str, path: str) -> str:
    """The field of ``path`` for ``method`` in the per-method path hashes (``aa``, ``cand``, ``shape``)."""
    return f"{method} {path}"


@dataclass
class RouteStats:
    """Everything the stores know about one route, summed over replicas."""

    route: str
    counters: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[int, int]] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)
    noise: dict[str, int] = field(default_factory=dict)
    # Per method: fields "<METHOD> <path>" (see method_field and PathCounts).
    aa: dict[str, int] = field(default_factory=dict)
    cand: dict[str, int] = field(default_factory=dict)
    shape: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        return self.counters.get(name, 0)

    def methods(self) -> list[str]:
        """The methods with comparisons or A/A pairs counted for learning."""
        found = {k.split(":", 1)[1] for k in self.counters if k.startswith(("compared:", "aa_pairs:"))}
        return sorted(found)

    def path_counts(self, method: str) -> PathCounts:
        """The learning counts of ``method`` (see PathCounts)."""
        return path_counts(self.counters, self.aa, self.cand, self.shape, method)


    def percentile(self, side: str, q: float) -> float | None:
        """The ``q`` quantile (0..1) of ``side``'s latency in seconds (bucket upper bound), or None."""
        hist = self.latency.get(side) or {}
        total = sum(hist.values())
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index in sorted(hist):
            seen += hist[index]
            if seen >= rank:
                return bucket_upper(index)
        return bucket_upper(max(hist))


def path_counts(
    counters: dict[str, int], aa: dict[str, int], cand: dict[str, int], shape: dict[str, int], method: str
) -> PathCounts:
    """``PathCounts`` of ``method`` from a route's counters and per-method path hashes."""
    prefix = method + " "
    cut = len(prefix)

    def mine(table: dict[str, int]) -> dict[str, int]:
        return {k[cut:]: v for k, v in table.items() if k.startswith(prefix)}

    return PathCounts(
        counters.get(f"compared:{method}", 0), counters.get(f"aa_pairs:{method}", 0),
        mine(aa), mine(cand), mine(shape),
    )  # fmt: skip


@dataclass
class Batch:
    """Increments and samples gathered since the last flush (plain dicts: cheap to record into)."""

    incr: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (kind, route, field) -> n
    samples: list[Sample] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.incr or self.samples)


class DiffStore(Protocol):
    """Recording (synchronous, in memory) and reading (async) of shadow results."""

    def count(self, route: str, name: str, n: int = 1) -> None: ...
    def latency(self, route: str, side: str, seconds: float) -> None: ...
    def matched(
        self, route: str, control_s: float | None, candidate_s: float | None, method: str | None = None
    ) -> None: ...
    def differed(self, route: str, signature: str, paths: tuple[str, ...]) -> None: ...
    def noise(self, route: str, paths: tuple[str, ...]) -> None: ...
    def aa_pair(self, route: str, method: str, paths: tuple[str, ...]) -> None: ...
    def path_diffs(
        self, route: str, method: str, paths: tuple[str, ...], same_shape: tuple[str, ...]
    ) -> None: ...
    def raced(self, route: str, method: str) -> None: ...
    def sample(self, sample: Sample) -> None: ...
    async def flush(self) -> None: ...
    async def stats(self) -> dict[str, RouteStats]: ...
    async def samples(self, route: str, limit: int = 20) -> list[Sample]: ...
    async def noise_paths(self, route: str) -> set[str]: ...
    async def path_counts(self, route: str, method: str) -> PathCounts: ...
    async def close(self) -> None: ...


class Recording:
    """The synchronous half every store shares: fill the current batch (``take`` detaches it)."""

    max_pending_samples = 1000

    def __init__(self) -> None:
        self.batch = Batch()

    def count(self, route: str, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` of ``route``."""
        self.batch.incr[("c", route, name)] += n
        self.batch.routes.add(route)

    def latency(self, route: str, side: str, seconds: float) -> None:
        """Record one latency of ``side`` (control or candidate)."""
        kind = _LAT_KEYS.get(side) or f"lat:{side}"
        self.batch.incr[(kind, route, _BUCKET_KEYS[bucket_of(seconds)])] += 1
        self.batch.routes.add(route)

    def matched(
        self, route: str, control_s: float | None, candidate_s: float | None, method: str | None = None
    ) -> None:
        """One comparison that matched: ``compared`` and ``matched`` counted, latencies recorded; with
        ``method``, ``compared:<method>`` too (the learning's denominator, see PathCounts).

        A latency is None when it was not measured (a pipelined shadow call, see proxy.upstream.pipe).
        """
        batch = self.batch  # once per compared shadow request: bucket_of inlined
        incr = batch.incr
        incr[("c", route, "compared")] += 1
        incr[("c", route, "matched")] += 1
        if method is not None:
            incr[("c", route, "compared:" + method)] += 1
        if control_s is not None:
            bucket = min(_LAST, bisect.bisect_left(_UPPERS, control_s))
            incr[("lat:control", route, _BUCKET_KEYS[bucket])] += 1
        if candidate_s is not None:
            bucket = min(_LAST, bisect.bisect_left(_UPPERS, candidate_s))
            incr[("lat:candidate", route, _BUCKET_KEYS[bucket])] += 1
        batch.routes.add(route)

    def differed(self, route: str, signature: str, paths: tuple[str, ...]) -> None:
        """Count one difference with this signature and each of its paths."""
        self.batch.incr[("sigs", route, signature)] += 1
        for path in paths:
            self.batch.incr[("paths", route, path)] += 1

    def noise(self, route: str, paths: tuple[str, ...]) -> None:
        """Count paths that differed between two control calls (A/A)."""
        for path in paths:
            self.batch.incr[("noise", route, path)] += 1
        self.batch.routes.add(route)

    def aa_pair(self, route: str, method: str, paths: tuple[str, ...]) -> None:
        """One A/A pair of ``method`` made (counter ``aa_pairs:<method>``), ``paths`` differing in it."""
        incr = self.batch.incr
        incr[("c", route, "aa_pairs:" + method)] += 1
        for path in paths:
            incr[("aa", route, method_field(method, path))] += 1
        self.batch.routes.add(route)

    def path_diffs(
        self, route: str, method: str, paths: tuple[str, ...], same_shape: tuple[str, ...]
    ) -> None:
        """One comparison of ``method`` that differed (``compared:<method>`` counted): each of ``paths``
        differed, and those of ``same_shape`` only in value with the same generated shape."""
        incr = self.batch.incr
        incr[("c", route, "compared:" + method)] += 1
        for path in paths:
            incr[("cand", route, method_field(method, path))] += 1
        for path in same_shape:
            incr[("shape", route, method_field(method, path))] += 1
        self.batch.routes.add(route)

    def raced(self, route: str, method: str) -> None:
        """One difference explained by data changing during the comparison (``raced``, ``raced:<method>``)."""
        incr = self.batch.incr
        incr[("c", route, "raced")] += 1
        incr[("c", route, "raced:" + method)] += 1
        self.batch.routes.add(route)

    def sample(self, sample: Sample) -> None:
        """Queue a sample for storage (the oldest pending one is dropped when storage lags)."""
        if len(self.batch.samples) >= self.max_pending_samples:
            self.batch.samples.pop(0)
            STORE_ERRORS.labels("samples_backlog").inc()
        self.batch.samples.append(sample)

    def take(self) -> Batch:
        """Detach and return the current batch."""
        batch, self.batch = self.batch, Batch()
        return batch
