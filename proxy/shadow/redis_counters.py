"""Shadow counters in Redis: write a batch's increments, read every route's stats and noise. Does I/O.

Layout under ``prefix``: ``routes`` (set), ``c:<route>`` (counters), ``lat:<route>:<side>`` (bucket ->
count), ``paths:<route>``, ``sigs:<route>`` and ``noise:<route>`` (path or signature -> count). Several
gateway replicas add into the same hashes, so a report sums every replica. Errors are the caller's
(``proxy.shadow.redis_pg.RedisPgStore`` logs and counts them).
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from proxy.shadow.store import Batch, RouteStats

__all__ = ["add", "key", "noise_paths", "stats"]

_KINDS: Final = ("c", "lat:control", "lat:candidate", "paths", "sigs", "noise")


def key(prefix: str, kind: str, route: str) -> str:
    """The Redis hash of ``kind`` (a ``Batch.incr`` kind) for ``route``."""
    if kind.startswith("lat:"):
        return f"{prefix}lat:{route}:{kind[4:]}"
    return f"{prefix}{kind}:{route}"


async def add(redis: aioredis.Redis, prefix: str, batch: Batch) -> None:
    """Add a batch's increments (and its routes to the set of routes) in one pipeline."""
    pipe = redis.pipeline(transaction=False)
    if batch.routes:
        pipe.sadd(prefix + "routes", *sorted(batch.routes))
    for (kind, route, name), n in batch.incr.items():
        pipe.hincrby(key(prefix, kind, route), name, n)
    await pipe.execute()


async def stats(redis: aioredis.Redis, prefix: str) -> dict[str, RouteStats]:
    """Every route's stats, read with one pipeline."""
    routes = sorted(_str(r) for r in await redis.smembers(prefix + "routes"))
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        for kind in _KINDS:
            pipe.hgetall(key(prefix, kind, route))
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
        )  # fmt: skip
    return out


async def noise_paths(redis: aioredis.Redis, prefix: str, route: str) -> set[str]:
    """Paths known to differ between two control calls on ``route``."""
    return {_str(k) for k in await redis.hkeys(key(prefix, "noise", route))}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
