"""Traffic actually served, per route and side, shared by every process through Redis time buckets.

Shadow comparisons say how new *would* answer; a canary needs how it *did*: requests, 5xx, connect
errors (the gateway answers those 502) and p99 of what each side served. The data path already counts
every request in its observer (``proxy.ops.metrics.RequestStats``: cumulative dicts by (route, target,
status) and latency buckets by (route, target)), so :class:`ServedFlusher` adds nothing per request: once
a second it diffs those dicts against its last copy and adds the difference into the current bucket.

A request the canary sent to new but legacy answered (fallback: new refused the connection, timed out,
reset it or answered 5xx) is observed as served by legacy, so the counts above never show new failing
while fallback hides it from clients, and the rollback triggers would never fire. The flusher therefore
also diffs the data path's fallback counts (``fallbacks``: (route, reason) -> count,
``DataPathCounters.fallbacks``) and adds each one to *new*'s counts as a failed request: ``n`` and
``5xx``, and ``502`` (a connect error) for ``connect`` (``CONNECT_REASONS``). A ``circuit`` fallback
(the breaker open: new was not even tried) is not counted (``UNTRIED``): it says nothing about new now,
and once new is back the breaker's half-open window still turns requests away, which counted as new's
failures would roll back the canary promoted right after new's return. The failures that opened the
breaker, and its probes, are counted.

Layout: ``<prefix>rollout:served:<t>`` is one hash per ``BUCKET_S``-second bucket starting at unix time
``t``, fields ``<route>|<side>|n``, ``|5xx``, ``|502`` and ``|le:<upper bound in seconds or inf>``
(latency counts), with a TTL of ``TTL_S`` (a day: what a progress view over time can read). Every replica
adds into the same hashes, so a reader sums all of them. A window's counts include the whole bucket the
window starts in (up to ``BUCKET_S`` seconds before it). A flush that fails keeps its counts for the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import redis.asyncio as aioredis

from proxy.rollout.decide import SideCounts
from proxy.rollout.state import text

__all__ = [
    "BUCKET_S", "CONNECT_REASONS", "EVIDENCE_S", "TTL_S", "UNTRIED", "Fallbacks", "ServedFlusher",
    "ServedReader", "Source", "baseline", "evidence_start", "side_counts", "since_base",
]  # fmt: skip

BUCKET_S: Final = 10
TTL_S: Final = 86400
# A stage's evidence covers at most its last 15 minutes (``evidence_start``): the gate's counts and the
# rollback triggers then weigh recent traffic, and the leader's read each second stays small.
EVIDENCE_S: Final = 900.0
SEAL_S: Final = 15.0  # a bucket is read once more than this after its end (flush interval, clock skew)
_SEP: Final = "|"

# What the observer keeps: (route, target, status) -> count, and (route, target) -> [count per latency
# bucket ..., count above the last bound, sum of seconds] (proxy.ops.metrics.RequestStats).
Source = Callable[[], tuple[Mapping[tuple[str, str, int], int], Mapping[tuple[str, str], Sequence[float]]]]


# (route, reason) -> requests legacy served in new's place (``DataPathCounters.fallbacks``).
Fallbacks = Callable[[], Mapping[tuple[str, str], int]]
# Fallback reasons that count as new's connect errors (new could not be reached); the others (timeout,
# reset, 5xx) count as its 5xx only, but for UNTRIED: the breaker kept the request from new.
CONNECT_REASONS: Final = frozenset({"connect"})
UNTRIED: Final = frozenset({"circuit"})


def evidence_start(since: float, now: float) -> float:
    """Where a stage's evidence window starts: when the stage began, but at most ``EVIDENCE_S`` back (a
    route a day at 100 % is judged on its recent traffic, not on a day of it, and reading it stays cheap)."""
    return max(since, now - EVIDENCE_S)


def bucket_start(t: float) -> int:
    """The start of the bucket holding unix time ``t``."""
    return int(t // BUCKET_S) * BUCKET_S


class ServedFlusher:
    """Adds this process's served-request counts into Redis (see the module docstring)."""

    def __init__(
        self, redis: aioredis.Redis, served_prefix: str, source: Source, bounds: Sequence[float],
        fallbacks: Fallbacks | None = None,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.prefix = served_prefix
        self.source = source
        self.fallbacks = fallbacks
        self.labels = [f"le:{b:g}" for b in bounds] + ["le:inf"]
        self._counts: dict[tuple[str, str, int], int] = {}
        self._cells: dict[tuple[str, str], list[float]] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        self._unflushed: dict[str, int] = {}  # what a failed flush did not write: sent with the next one

    def _delta(self) -> dict[str, int]:
        """Field -> increment since the last call (copies taken first: the loop keeps observing)."""
        counts_now, cells_now = self.source()
        counts = dict(counts_now)
        cells = {k: list(v) for k, v in dict(cells_now).items()}
        out: dict[str, int] = {}
        for (route, side, status), n in counts.items():
            d = n - self._counts.get((route, side, status), 0)
            if d <= 0:
                continue
            base = f"{route}{_SEP}{side}{_SEP}"
            out[base + "n"] = out.get(base + "n", 0) + d
            if status >= 500:
                out[base + "5xx"] = out.get(base + "5xx", 0) + d
            if status == 502:
                out[base + "502"] = out.get(base + "502", 0) + d
        for (route, side), cell in cells.items():
            old = self._cells.get((route, side))
            for i, label in enumerate(self.labels):
                d = int(cell[i] - (old[i] if old is not None else 0))
                if d > 0:
                    key = f"{route}{_SEP}{side}{_SEP}{label}"
                    out[key] = out.get(key, 0) + d
        self._counts, self._cells = counts, cells
        if self.fallbacks is not None:
            self._add_fallbacks(out)
        return out

    def _add_fallbacks(self, out: dict[str, int]) -> None:
        """New's failures that legacy answered in its place (see the module docstring)."""
        assert self.fallbacks is not None
        now = dict(self.fallbacks())
        for (route, reason), n in now.items():
            d = n - self._fallbacks.get((route, reason), 0)
            if d <= 0 or reason in UNTRIED:
                continue
            base = f"{route}{_SEP}new{_SEP}"
            for suffix in ("n", "5xx", *(("502",) if reason in CONNECT_REASONS else ())):
                out[base + suffix] = out.get(base + suffix, 0) + d
        self._fallbacks = now

    async def flush(self, now: float) -> int:
        """Add what was served since the last flush into the bucket of ``now``; the fields written."""
        delta = self._unflushed
        for name, n in self._delta().items():
            delta[name] = delta.get(name, 0) + n
        if not delta:
            return 0
        key = f"{self.prefix}{bucket_start(now)}"
        pipe = self.redis.pipeline(transaction=False)
        for name, n in delta.items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, TTL_S)
        await pipe.execute()  # on failure the counts stay in _unflushed (a Redis outage loses none)
        self._unflushed = {}
        return len(delta)


async def baseline(
    redis: aioredis.Redis, served_prefix: str, route: str, now: float
) -> tuple[int, dict[str, int]]:
    """(bucket, fields): what ``route`` has served so far in the bucket of ``now``, the base a stage
    beginning at ``now`` keeps (``RouteState.base``). Counts observed before ``now`` but not yet flushed
    (each process flushes every quarter second) are not in it and still count in the stage."""
    start = bucket_start(now)
    raw = await redis.hgetall(f"{served_prefix}{start}")
    mine = route + _SEP
    fields = {text(k): int(v) for k, v in raw.items()}
    return start, {k: n for k, n in fields.items() if k.startswith(mine)}


def since_base(
    fields: Mapping[str, int], since: float, base_at: int, base: Mapping[str, int]
) -> dict[str, int]:
    """A window's ``fields`` less the ``base`` its stage began with, when the window starts in the base's
    bucket (a base of another bucket is stale: the window does not include it)."""
    out = dict(fields)
    if base_at < 0 or base_at != bucket_start(since):
        return out
    for name, n in base.items():
        out[name] = max(0, out.get(name, 0) - n)
    return out


def side_counts(fields: Mapping[str, int], route: str, side: str) -> SideCounts:
    """One route and side's counts from summed bucket fields."""
    base = f"{route}{_SEP}{side}{_SEP}"
    hist: list[tuple[float, int]] = []
    for name, n in fields.items():
        if name.startswith(base + "le:") and n > 0:
            label = name[len(base) + 3 :]
            hist.append((math.inf if label == "inf" else float(label), n))
    hist.sort()
    total = sum(n for _, n in hist)
    p99: float | None = None
    if total:
        seen = 0
        for upper, n in hist:
            seen += n
            if seen >= 0.99 * total:
                # Above the last bound: say twice the last bound rather than infinity (still "slow").
                p99 = upper if upper != math.inf else (hist[-2][0] * 2 if len(hist) > 1 else 60.0)
                break
    return SideCounts(
        fields.get(base + "n", 0), fields.get(base + "5xx", 0), fields.get(base + "502", 0), p99
    )


class ServedReader:
    """Sums the buckets of a window; buckets that can no longer change are read from Redis once."""

    def __init__(self, redis: aioredis.Redis, served_prefix: str) -> None:
        self.redis = redis
        self.prefix = served_prefix
        self._sealed: dict[int, dict[str, int]] = {}
        self._open: dict[int, dict[str, int]] = {}  # read in this window() call, not complete yet

    async def window(self, since: float, now: float) -> dict[str, int]:
        """Every field summed over the buckets from the one holding ``since`` to the one holding ``now``,
        at most ``EVIDENCE_S`` back (use ``evidence_start`` for the ``since`` a stage's base applies to).
        The buckets not cached are read in one pipeline."""
        first = bucket_start(evidence_start(since, now))
        starts = range(first, bucket_start(now) + 1, BUCKET_S)
        missing = [start for start in starts if start not in self._sealed]
        if missing:
            pipe = self.redis.pipeline(transaction=False)
            for start in missing:
                pipe.hgetall(f"{self.prefix}{start}")
            for start, raw in zip(missing, await pipe.execute(), strict=True):
                fields = {text(k): int(v) for k, v in (raw or {}).items()}
                # Writers flush about once a second, each by its own clock: a bucket that ended more than
                # SEAL_S ago is complete (replicas' clocks within that of each other).
                if start + BUCKET_S + SEAL_S < now:
                    self._sealed[start] = fields
                else:
                    self._open[start] = fields
        total: dict[str, int] = {}
        for start in starts:
            sealed = self._sealed.get(start)
            for name, n in (sealed if sealed is not None else self._open.pop(start, {})).items():
                total[name] = total.get(name, 0) + n
        for start in [s for s in self._sealed if s < now - EVIDENCE_S - BUCKET_S]:
            del self._sealed[start]
        return total
