"""Where shadow-comparison results go: counters and latency histograms in Redis, differing samples in
PostgreSQL (table ``shadow_diffs``, migrations/0002), behind the small ``DiffStore`` protocol.

Recording is synchronous and only touches memory (a ``Batch``); ``flush()`` writes a batch with one
Redis pipeline and one PostgreSQL ``executemany``, off the hot path. Several gateway replicas add into the
same Redis hashes, so a report sums every replica. Latencies go into fixed logarithmic buckets (hash
fields), which add up across replicas and still give p50/p99. Samples are capped per route and per diff
signature and expire after ``retention_days``. A storage failure is logged and counted, never raised.
``MemoryStore`` has the same behaviour without servers, for unit tests.

Redis layout under ``prefix``: ``routes`` (set), ``c:<route>`` (counters), ``lat:<route>:<side>``
(bucket -> count), ``paths:<route>``, ``sigs:<route>`` and ``noise:<route>`` (path or signature -> count).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter as PromCounter

__all__ = [
    "COUNTERS",
    "DEFAULT_PREFIX",
    "Batch",
    "DiffStore",
    "MemoryStore",
    "RedisPgStore",
    "RouteStats",
    "Sample",
    "StoreError",
    "bucket_of",
    "bucket_upper",
]

log = logging.getLogger("strangler.shadow.store")

COUNTERS: Final = (
    "seen", "sampled", "compared", "matched", "differed", "noise", "dropped", "skipped",
    "errors_control", "errors_candidate",
)  # fmt: skip
SIDES: Final = ("control", "candidate")
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
class RouteStats:
    """Everything the stores know about one route, summed over replicas."""

    route: str
    counters: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[int, int]] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)
    noise: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        return self.counters.get(name, 0)

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
    def matched(self, route: str, control_s: float | None, candidate_s: float | None) -> None: ...
    def differed(self, route: str, signature: str, paths: tuple[str, ...]) -> None: ...
    def noise(self, route: str, paths: tuple[str, ...]) -> None: ...
    def sample(self, sample: Sample) -> None: ...
    async def flush(self) -> None: ...
    async def stats(self) -> dict[str, RouteStats]: ...
    async def samples(self, route: str, limit: int = 20) -> list[Sample]: ...
    async def noise_paths(self, route: str) -> set[str]: ...
    async def close(self) -> None: ...


class _Recording:
    """The synchronous half shared by both stores: fill the current batch."""

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

    def matched(self, route: str, control_s: float | None, candidate_s: float | None) -> None:
        """One comparison that matched: ``compared`` and ``matched`` counted, latencies recorded.

        A latency is None when it was not measured (a pipelined shadow call, see proxy.upstream.pipe).
        """
        batch = self.batch  # once per compared shadow request: bucket_of inlined
        incr = batch.incr
        incr[("c", route, "compared")] += 1
        incr[("c", route, "matched")] += 1
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


class MemoryStore(_Recording):
    """The in-memory DiffStore for unit tests (same caps as the real one)."""

    def __init__(self, per_signature: int = 20, per_route: int = 200) -> None:
        super().__init__()
        self.per_signature = per_signature
        self.per_route = per_route
        self._stats: dict[str, RouteStats] = {}
        self._samples: list[Sample] = []

    async def flush(self) -> None:
        """Apply the pending batch."""
        batch = self.take()
        for (kind, route, name), n in batch.incr.items():
            st = self._stats.setdefault(route, RouteStats(route))
            if kind == "c":
                st.counters[name] = st.counters.get(name, 0) + n
            elif kind.startswith("lat:"):
                hist = st.latency.setdefault(kind[4:], {})
                hist[int(name)] = hist.get(int(name), 0) + n
            else:
                table: dict[str, int] = getattr(st, kind if kind != "sigs" else "signatures")
                table[name] = table.get(name, 0) + n
        for s in batch.samples:
            same = [x for x in self._samples if x.route == s.route and x.signature == s.signature]
            if len(same) >= self.per_signature:
                continue
            self._samples.append(s)
            mine = [x for x in self._samples if x.route == s.route]
            if len(mine) > self.per_route:
                self._samples.remove(min(mine, key=lambda x: x.at))

    async def stats(self) -> dict[str, RouteStats]:
        """A copy of every route's stats."""
        return {
            k: RouteStats(v.route, dict(v.counters), {s: dict(h) for s, h in v.latency.items()},
                          dict(v.paths), dict(v.signatures), dict(v.noise))
            for k, v in self._stats.items()
        }

    async def samples(self, route: str, limit: int = 20) -> list[Sample]:
        """The newest samples of ``route``."""
        mine = sorted((s for s in self._samples if s.route == route), key=lambda s: s.at, reverse=True)
        return mine[:limit]

    async def noise_paths(self, route: str) -> set[str]:
        """Paths known to differ between two control calls on ``route``."""
        return set(self._stats[route].noise) if route in self._stats else set()

    async def close(self) -> None:
        """Flush what is pending."""
        await self.flush()


_INSERT: Final = """
INSERT INTO shadow_diffs (route, signature, method, path, primary_side, control_status, candidate_status,
    control_error, candidate_error, diff, control_body, candidate_body, control_ms, candidate_ms, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, to_timestamp($15))
"""
_TRIM: Final = """
DELETE FROM shadow_diffs d USING (
    SELECT id,
           row_number() OVER (PARTITION BY route, signature ORDER BY created_at DESC, id DESC) AS per_sig,
           row_number() OVER (PARTITION BY route ORDER BY created_at DESC, id DESC) AS per_route
    FROM shadow_diffs WHERE route = ANY($1::text[])
) x
WHERE d.id = x.id AND (x.per_sig > $2 OR x.per_route > $3)
"""
_SELECT: Final = """
SELECT route, signature, method, path, primary_side, control_status, candidate_status, diff::text AS diff,
       control_body, candidate_body, control_ms, candidate_ms, control_error, candidate_error,
       extract(epoch FROM created_at)::float8 AS at
FROM shadow_diffs WHERE route = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""


class RedisPgStore(_Recording):
    """The real DiffStore: Redis hashes under ``prefix`` and the ``shadow_diffs`` table (optional)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pg: asyncpg.Pool | None,
        prefix: str = DEFAULT_PREFIX,
        *,
        per_signature: int = 20,
        per_route: int = 200,
        retention_days: float = 7.0,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.pg = pg
        self.prefix = prefix
        self.per_signature = per_signature
        self.per_route = per_route
        self.retention_days = retention_days
        self._last_retention = 0.0
        self._last_failure_log: dict[str, float] = {}

    @classmethod
    async def connect(
        cls, redis_url: str, database_url: str | None, prefix: str = DEFAULT_PREFIX, **caps: float
    ) -> RedisPgStore:
        """Open a Redis client and (with a database URL) a small PostgreSQL pool; ``aclose`` closes both."""
        # Timeouts: a hung Redis must stall only the background flush, and not forever.
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        pg = None
        if database_url:
            try:
                pg = await asyncpg.create_pool(database_url, min_size=1, max_size=2, timeout=5.0,
                                               command_timeout=10.0)
            except BaseException:
                await client.aclose()
                raise
        return cls(client, pg, prefix, **caps)  # type: ignore[arg-type]  # caps are the keyword options

    @classmethod
    async def connect_lenient(
        cls, redis_url: str, database_url: str | None, prefix: str = DEFAULT_PREFIX
    ) -> RedisPgStore:
        """Like ``connect``, but an unreachable database only turns samples off (logged), for servers
        that must start anyway: counters in Redis are the part that matters."""
        try:
            return await cls.connect(redis_url, database_url, prefix)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("shadow samples are off: cannot connect to DATABASE_URL (%s); counters work", exc)
            return await cls.connect(redis_url, None, prefix)

    async def aclose(self) -> None:
        """Flush, then close the clients opened by ``connect``."""
        try:
            await self.flush()
        finally:
            await self.redis.aclose()
            if self.pg is not None:
                await self.pg.close()

    def _key(self, kind: str, route: str) -> str:
        if kind.startswith("lat:"):
            return f"{self.prefix}lat:{route}:{kind[4:]}"
        return f"{self.prefix}{kind}:{route}"

    async def flush(self) -> None:
        """Write the pending batch; failures are logged and counted, the batch is then dropped."""
        batch = self.take()
        if not batch:
            return
        if batch.incr:
            try:
                pipe = self.redis.pipeline(transaction=False)
                if batch.routes:
                    pipe.sadd(self.prefix + "routes", *sorted(batch.routes))
                for (kind, route, name), n in batch.incr.items():
                    pipe.hincrby(self._key(kind, route), name, n)
                await pipe.execute()
            except (aioredis.RedisError, OSError) as exc:
                STORE_ERRORS.labels("redis").inc()
                self._log_failure("redis", "shadow counters not written to Redis (%s); batch lost", exc)
        if batch.samples and self.pg is not None:
            try:
                await self._write_samples(batch.samples)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                STORE_ERRORS.labels("postgres").inc()
                self._log_failure("postgres", "shadow samples not written to PostgreSQL (%s); lost", exc)

    def _log_failure(self, part: str, message: str, exc: BaseException) -> None:
        # A store that is down fails every flush (twice a second): log once a minute, count every time.
        now = time.monotonic()
        if now - self._last_failure_log.get(part, -1e9) >= 60.0:
            self._last_failure_log[part] = now
            log.error(message + " (strangler_shadow_store_errors counts them; logged once a minute)", exc)

    async def _write_samples(self, samples: list[Sample]) -> None:
        assert self.pg is not None
        routes = sorted({s.route for s in samples})
        async with self.pg.acquire() as conn:
            # Skip samples whose signature already has its quota, so a saturated signature costs no writes.
            rows = await conn.fetch(
                "SELECT route, signature, count(*) AS n FROM shadow_diffs WHERE route = ANY($1::text[])"
                " GROUP BY route, signature",
                routes,
            )
            have = {(r["route"], r["signature"]): r["n"] for r in rows}
            keep = []
            for s in samples:
                key = (s.route, s.signature)
                if have.get(key, 0) < self.per_signature:
                    have[key] = have.get(key, 0) + 1
                    keep.append(s)
            if keep:
                await conn.executemany(_INSERT, [_row(s) for s in keep])
                await conn.execute(_TRIM, routes, self.per_signature, self.per_route)
            now = time.time()
            if now - self._last_retention > 60:
                self._last_retention = now
                await conn.execute(
                    "DELETE FROM shadow_diffs WHERE created_at < now() - make_interval(secs => $1)",
                    self.retention_days * 86400.0,
                )

    async def stats(self) -> dict[str, RouteStats]:
        """Every route's stats, read with one pipeline."""
        routes = sorted(_str(r) for r in await self.redis.smembers(self.prefix + "routes"))
        pipe = self.redis.pipeline(transaction=False)
        kinds = ("c", "lat:control", "lat:candidate", "paths", "sigs", "noise")
        for route in routes:
            for kind in kinds:
                pipe.hgetall(self._key(kind, route))
        replies = await pipe.execute()
        out: dict[str, RouteStats] = {}
        for i, route in enumerate(routes):
            parts = [{_str(k): int(v) for k, v in h.items()} for h in replies[i * 6 : i * 6 + 6]]
            out[route] = RouteStats(
                route,
                counters=parts[0],
                latency={"control": {int(k): v for k, v in parts[1].items()},
                         "candidate": {int(k): v for k, v in parts[2].items()}},
                paths=parts[3],
                signatures=parts[4],
                noise=parts[5],
            )
        return out

    async def samples(self, route: str, limit: int = 20) -> list[Sample]:
        """The newest stored samples of ``route`` (empty without PostgreSQL)."""
        if self.pg is None:
            return []
        try:
            rows = await self.pg.fetch(_SELECT, route, limit)
        except asyncpg.UndefinedTableError:
            raise StoreError(
                "the database has no shadow_diffs table: apply the migrations (strangler migrate) and retry"
            ) from None
        return [_sample(r) for r in rows]

    async def noise_paths(self, route: str) -> set[str]:
        """Paths known to differ between two control calls on ``route``."""
        return {_str(k) for k in await self.redis.hkeys(self._key("noise", route))}

    async def close(self) -> None:
        """Flush what is pending (the caller owns and closes the clients)."""
        await self.flush()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; a replacement character keeps the sample storable.
    return value.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")


def _row(s: Sample) -> tuple[Any, ...]:
    diff = orjson.dumps(s.diff, option=orjson.OPT_NON_STR_KEYS).decode()
    return (
        s.route, s.signature, s.method, _text(s.path), s.primary, s.control_status, s.candidate_status,
        s.control_error, s.candidate_error, _text(diff), _text(s.control_body), _text(s.candidate_body),
        s.control_ms, s.candidate_ms, s.at,
    )  # fmt: skip


def _sample(r: asyncpg.Record) -> Sample:
    return Sample(
        route=r["route"], signature=r["signature"], method=r["method"], path=r["path"],
        primary=r["primary_side"], control_status=r["control_status"], candidate_status=r["candidate_status"],
        diff=orjson.loads(r["diff"]), control_body=r["control_body"], candidate_body=r["candidate_body"],
        control_ms=r["control_ms"], candidate_ms=r["candidate_ms"], control_error=r["control_error"],
        candidate_error=r["candidate_error"], at=r["at"],
    )  # fmt: skip
