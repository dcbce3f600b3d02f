"""The product's ``DiffStore``: counters in Redis, samples in PostgreSQL (optional). Does I/O.

Recording fills a batch in memory (``proxy.shadow.store.Recording``); ``flush()`` writes it with one
Redis pipeline (``proxy.shadow.redis_counters``: capped hashes with a TTL) and one PostgreSQL
``executemany`` (``proxy.shadow.pg_samples``: slots decided before writing), off the hot path. Samples
expire after ``retention_days``. A storage failure is logged (once a minute per part) and counted in
``strangler_shadow_store_errors``, never raised. A database unreachable when the store opens
(``connect_lenient``) is retried at later flushes with exponential backoff (1 s doubling to 60 s); the
samples recorded meanwhile are dropped and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.asyncio as aioredis

from proxy.shadow import pg_samples, redis_counters
from proxy.shadow.migrator import MigrationError, migrate_gateway_on
from proxy.shadow.store import (
    DEFAULT_PREFIX,
    STORE_ERRORS,
    Batch,
    Epoch,
    PathCounts,
    Recording,
    RouteStats,
    Sample,
    split_key,
)

__all__ = ["RedisPgStore"]

log = logging.getLogger("strangler.shadow.store")

_FIRST_RETRY_S: Final = 1.0
_MAX_RETRY_S: Final = 60.0
GENERATIONS_EVERY_S: Final = 1.0  # how often the routes' reset generations are read again (at a flush)
# After a route's epoch changes in this process, a count for the epoch it left is a straggler (a shadow
# call in flight across the reload) for this long, and a return to that configuration (a rollback)
# after it: only the latter starts a fresh epoch.
STRAGGLER_S: Final = 60.0


class RedisPgStore(Recording):
    """The real DiffStore: Redis hashes under ``prefix`` and the ``shadow_diffs`` table (optional)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pg: asyncpg.Pool | None,
        prefix: str = DEFAULT_PREFIX,
        *,
        per_signature: int = 5,
        per_route: int = 200,
        retention_days: float = 7.0,
        max_fields: int = redis_counters.DEFAULT_MAX_FIELDS,
        ttl_days: float = redis_counters.DEFAULT_TTL_S / 86400,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.pg = pg
        self.prefix = prefix
        self.per_signature = per_signature
        self.per_route = per_route
        self.retention_days = retention_days
        self.max_fields = max_fields  # distinct paths / signatures / noise paths per route in Redis
        self.ttl_s = int(ttl_days * 86400)  # Redis keys expire this long after their last write
        self.database_url: str | None = None  # set while the database is to be reached again (see flush)
        self._pg_retry_at = 0.0
        self._pg_backoff = _FIRST_RETRY_S
        self._clock = clock  # times the retention sweeps and the failure logs (a test may drive it)
        self._last_retention: float | None = None
        self._last_failure_log: dict[str, float] = {}
        self._wall = wall  # epoch start times (shown by the report, shared by replicas: wall time)
        self._registered: set[tuple[str, str]] = set()  # (route, epoch) this process made known
        self._current: dict[str, tuple[str, float]] = {}  # route -> (its epoch here, since when)
        self._generations_at: float | None = None

    @classmethod
    async def connect(
        cls, redis_url: str, database_url: str | None, prefix: str = DEFAULT_PREFIX, **caps: Any
    ) -> RedisPgStore:
        """Open a Redis client and (with a database URL) a small PostgreSQL pool; ``aclose`` closes both."""
        # Timeouts: a hung Redis must stall only the background flush, and not forever.
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        pg = None
        if database_url:
            try:
                pg = await _open_pg(database_url, 5.0)
            except BaseException:
                await client.aclose()
                raise
        store = cls(client, pg, prefix, **caps)  # caps: the keyword options
        try:  # the epochs' generations before anything is recorded (else read at the first flush)
            store.set_generations(await redis_counters.generations(client, prefix))
            store._generations_at = store._clock()
        except (aioredis.RedisError, OSError):
            pass
        return store

    @classmethod
    async def connect_lenient(
        cls, redis_url: str, database_url: str | None, prefix: str = DEFAULT_PREFIX, **caps: Any
    ) -> RedisPgStore:
        """Like ``connect``, for the gateway's processes: the gateway's own tables are created or
        migrated (``proxy.shadow.migrator``, under its advisory lock), and an unreachable database only
        pauses samples (logged), for servers that must start anyway: counters in Redis are the part
        that matters. Later flushes try the database again, with backoff, and samples resume once it
        answers (its schema applied then)."""
        try:
            store = await cls.connect(redis_url, database_url, prefix, **caps)
            if store.pg is not None:
                try:
                    await _own_schema(store.pg)
                except BaseException:
                    await store.aclose()
                    raise
            return store
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError) as exc:
            log.warning(
                "shadow samples are paused: cannot connect to DATABASE_URL (%s); counters work, and the"
                " database is tried again with backoff (up to every %gs)", exc, _MAX_RETRY_S,
            )  # fmt: skip
            store = await cls.connect(redis_url, None, prefix, **caps)
            store.database_url = database_url
            store._pg_retry_at = store._clock() + _FIRST_RETRY_S
            return store

    async def _reconnect_pg(self) -> None:
        # The database was down when the store opened: try it again when the backoff allows.
        now = self._clock()
        if self.database_url is None or now < self._pg_retry_at:
            return
        pg = None
        try:
            pg = await _open_pg(self.database_url, 2.0)
            await _own_schema(pg)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError) as exc:
            if pg is not None:
                await pg.close()
            self._pg_backoff = min(_MAX_RETRY_S, self._pg_backoff * 2)
            self._pg_retry_at = now + self._pg_backoff
            self._log_failure("postgres", "shadow samples still paused: DATABASE_URL unreachable (%s)", exc)
            return
        self.pg = pg
        self.database_url = None
        log.warning("shadow samples resumed: connected to DATABASE_URL")

    async def aclose(self) -> None:
        """Flush, then close the clients opened by ``connect``."""
        try:
            await self.flush()
        finally:
            await self.redis.aclose()
            if self.pg is not None:
                await self.pg.close()

    async def flush(self) -> None:
        """Write the pending batch; failures are logged and counted, the batch is then dropped."""
        batch = self.take()
        if self.pg is None and self.database_url is not None:
            await self._reconnect_pg()
        if batch.incr or self._generations_due():
            try:
                await self._epochs(batch)
                if batch.incr:
                    await redis_counters.add(
                        self.redis, self.prefix, batch, max_fields=self.max_fields, ttl=self.ttl_s,
                        now=self._wall(),
                    )
            except (aioredis.RedisError, OSError) as exc:
                STORE_ERRORS.labels("redis").inc()
                self._log_failure("redis", "shadow counters not written to Redis (%s); batch lost", exc)
        if batch.samples and self.pg is not None:
            try:
                await self._write_samples(batch.samples)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                STORE_ERRORS.labels("postgres").inc()
                self._log_failure("postgres", "shadow samples not written to PostgreSQL (%s); lost", exc)
        elif batch.samples and self.database_url is not None:
            STORE_ERRORS.labels("postgres").inc(len(batch.samples))  # paused: the database is down

    def _generations_due(self) -> bool:
        at = self._generations_at
        return at is None or self._clock() - at >= GENERATIONS_EVERY_S

    async def _epochs(self, batch: Batch) -> None:
        # Epochs of this batch's keys not yet made known (the first write of each), then the routes'
        # reset generations (read again every GENERATIONS_EVERY_S: a reset by hand is seen within that).
        now = self._clock()
        stale = self._generations_due()
        order = {pair: i for i, pair in enumerate(self.described)}  # the order this process met them
        pairs = sorted({split_key(k)[:2] for k in batch.routes}, key=lambda p: (order.get(p, -1), p))
        for route, epoch in pairs:
            current = self._current.get(route)
            if current is not None and (
                current[0] == epoch or ((route, epoch) in self._registered and now - current[1] < STRAGGLER_S)
            ):
                continue
            config = self.described.get((route, epoch), {})
            done = await redis_counters.register(
                self.redis, self.prefix, route, epoch, config, self._wall(), ttl=self.ttl_s
            )
            self._registered.add((route, epoch))
            self._current[route] = (epoch, now)
            stale = stale or done == 2  # back to an earlier configuration: a fresh generation
        if stale:
            self._generations_at = now
            self.set_generations(await redis_counters.generations(self.redis, self.prefix))

    def _log_failure(self, part: str, message: str, exc: BaseException) -> None:
        # A store that is down fails every flush (twice a second): log once a minute, count every time.
        now = self._clock()
        last = self._last_failure_log.get(part)
        if last is None or now - last >= 60.0:
            self._last_failure_log[part] = now
            log.error(message + " (strangler_shadow_store_errors counts them; logged once a minute)", exc)

    async def _write_samples(self, samples: list[Sample]) -> None:
        assert self.pg is not None
        # How often each signature differed (Redis, capped) decides which examples keep their slots.
        seen: dict[tuple[str, str], int] = {}
        for route, epoch in sorted({(s.route, s.epoch or "0") for s in samples}):
            try:
                counts = await redis_counters.signatures(self.redis, self.prefix, route, epoch)
            except (aioredis.RedisError, OSError):
                continue  # without counts every signature weighs the same: still bounded
            for sig, n in counts.items():
                seen[(route, sig)] = n
        await pg_samples.write(self.pg, samples, self.per_signature, self.per_route, seen)
        now = self._clock()
        # The retention sweep scans the table: once a minute is plenty.
        if self._last_retention is None or now - self._last_retention > 60:
            self._last_retention = now
            await pg_samples.expire(self.pg, self.retention_days)

    async def stats(self, history: bool = False) -> dict[str, RouteStats]:
        """Every route's stats in its current epoch (and every kept epoch's totals with ``history``)."""
        return await redis_counters.stats(self.redis, self.prefix, history)

    async def samples(self, route: str, limit: int = 20, epoch: str | None = None) -> list[Sample]:
        """The newest stored samples of ``route`` (of ``epoch`` only, when given; empty without
        PostgreSQL)."""
        if self.pg is None:
            return []
        return await pg_samples.read(self.pg, route, limit, epoch)

    async def noise_paths(self, key: str) -> set[str]:
        """Paths known to differ between two control calls for a recording key (route, epoch, method)."""
        return await redis_counters.noise_paths(self.redis, self.prefix, key)

    async def path_counts(self, key: str) -> PathCounts:
        """What learning noise and generated fields of a recording key needs (see PathCounts)."""
        return await redis_counters.learning(self.redis, self.prefix, key)

    async def save_state(self, route: str, epoch: str, state: dict[str, float]) -> None:
        """Keep the stable verdict's state of ``route``'s ``epoch`` where every replica and report see it."""
        await redis_counters.save_state(self.redis, self.prefix, route, epoch, state, self.ttl_s)

    async def reset(self, route: str) -> Epoch | None:
        """Start a new epoch of ``route`` by hand (None when it has none yet)."""
        return await redis_counters.reset(self.redis, self.prefix, route, self._wall(), self.ttl_s)

    async def close(self) -> None:
        """Flush what is pending (the caller owns and closes the clients)."""
        await self.flush()


async def _open_pg(database_url: str, connect_s: float) -> asyncpg.Pool:
    """A small pool (the store writes from one background flush)."""
    return await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, timeout=connect_s, command_timeout=10.0
    )


async def _own_schema(pg: asyncpg.Pool) -> None:
    """Create or migrate the gateway's own tables (schema ``strangler``); never the application's."""
    async with pg.acquire() as conn:
        await migrate_gateway_on(conn)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
