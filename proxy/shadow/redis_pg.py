"""The product's ``DiffStore``: counters in Redis, samples in PostgreSQL (optional). Does I/O.

Recording fills a batch in memory (``proxy.shadow.store.Recording``); ``flush()`` writes it with one
Redis pipeline (``proxy.shadow.redis_counters``) and one PostgreSQL ``executemany``
(``proxy.shadow.pg_samples``), off the hot path. Samples expire after ``retention_days``. A storage
failure is logged (once a minute per part) and counted in ``strangler_shadow_store_errors``, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.asyncio as aioredis

from proxy.shadow import pg_samples, redis_counters
from proxy.shadow.store import DEFAULT_PREFIX, STORE_ERRORS, Recording, RouteStats, Sample

__all__ = ["RedisPgStore"]

log = logging.getLogger("strangler.shadow.store")


class RedisPgStore(Recording):
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.pg = pg
        self.prefix = prefix
        self.per_signature = per_signature
        self.per_route = per_route
        self.retention_days = retention_days
        self._clock = clock  # times the retention sweeps and the failure logs (a test may drive it)
        self._last_retention: float | None = None
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
                                               command_timeout=10.0)  # fmt: skip
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

    async def flush(self) -> None:
        """Write the pending batch; failures are logged and counted, the batch is then dropped."""
        batch = self.take()
        if not batch:
            return
        if batch.incr:
            try:
                await redis_counters.add(self.redis, self.prefix, batch)
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
        now = self._clock()
        last = self._last_failure_log.get(part)
        if last is None or now - last >= 60.0:
            self._last_failure_log[part] = now
            log.error(message + " (strangler_shadow_store_errors counts them; logged once a minute)", exc)

    async def _write_samples(self, samples: list[Sample]) -> None:
        assert self.pg is not None
        await pg_samples.write(self.pg, samples, self.per_signature, self.per_route)
        now = self._clock()
        # The retention sweep scans the table: once a minute is plenty.
        if self._last_retention is None or now - self._last_retention > 60:
            self._last_retention = now
            await pg_samples.expire(self.pg, self.retention_days)

    async def stats(self) -> dict[str, RouteStats]:
        """Every route's stats, read with one pipeline."""
        return await redis_counters.stats(self.redis, self.prefix)

    async def samples(self, route: str, limit: int = 20) -> list[Sample]:
        """The newest stored samples of ``route`` (empty without PostgreSQL)."""
        if self.pg is None:
            return []
        return await pg_samples.read(self.pg, route, limit)

    async def noise_paths(self, route: str) -> set[str]:
        """Paths known to differ between two control calls on ``route``."""
        return await redis_counters.noise_paths(self.redis, self.prefix, route)

    async def close(self) -> None:
        """Flush what is pending (the caller owns and closes the clients)."""
        await self.flush()
