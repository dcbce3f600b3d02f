"""The match-rate time series (``<prefix>series:<t>``): written at each flush, bounded by a TTL, read back
as a window of buckets; against the real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from proxy.routing.table import parse_routes
from proxy.shadow.redis_counters import SERIES_TTL_S, read_buckets, series_prefix
from proxy.shadow.redis_pg import RedisPgStore

ROUTES = """\
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
default: legacy
routes:
  - {name: a, match: {methods: [GET], path: /a}, target: legacy, shadow: {sample: 1.0}}
  - {name: b, match: {methods: [GET, POST], path: /b}, target: legacy, shadow: {sample: 1.0}}
"""
T0 = 1_800_000_000.0  # a bucket start (a multiple of 10)


async def test_each_flush_adds_comparisons_into_the_bucket_of_its_wall_time(
    redis_url: str, redis_prefix: str
) -> None:
    """A flush adds compared and differed per route (methods summed) into its 10 s bucket, with a TTL; a
    window reads the buckets oldest first, empty ones included."""
    table = parse_routes(ROUTES, "routes.yaml")
    a, b = table.routes[0], table.routes[1]
    wall = [T0 + 3]
    redis = aioredis.Redis.from_url(redis_url)
    store = RedisPgStore(redis, None, redis_prefix, wall=lambda: wall[0])
    try:
        for _ in range(9):
            store.matched(store.key(a, "GET"), 0.001, 0.001)
        store.count(store.key(a, "GET"), "compared")
        store.count(store.key(a, "GET"), "differed")
        store.matched(store.key(b, "GET"), 0.001, 0.001)
        store.matched(store.key(b, "POST"), 0.001, 0.001)
        await store.flush()
        wall[0] = T0 + 25
        store.matched(store.key(a, "GET"), 0.001, 0.001)
        await store.flush()
        buckets = await read_buckets(redis, series_prefix(redis_prefix), T0, T0 + 29)
        ttl = await redis.ttl(f"{series_prefix(redis_prefix)}{int(T0)}")
    finally:
        await redis.aclose()
    assert buckets == [
        (int(T0), {"a|compared": 10, "a|differed": 1, "b|compared": 2}),
        (int(T0) + 10, {}),
        (int(T0) + 20, {"a|compared": 1}),
    ]
    assert 0 < ttl <= SERIES_TTL_S


async def test_a_cache_keeps_complete_buckets_and_reads_the_open_one_again(
    redis_url: str, redis_prefix: str
) -> None:
    """With a cache, a bucket that ended more than a few seconds ago is read once; the current one is read
    at every call (it still grows); entries older than the TTL are dropped."""
    redis = aioredis.Redis.from_url(redis_url)
    prefix = series_prefix(redis_prefix)
    cache: dict[tuple[str, int], dict[str, int]] = {}
    try:
        await redis.hset(f"{prefix}{int(T0)}", "a|compared", 5)
        await redis.hset(f"{prefix}{int(T0) + 10}", "a|compared", 1)
        now = T0 + 15
        first = await read_buckets(redis, prefix, T0, now, cache=cache)
        await redis.hincrby(f"{prefix}{int(T0)}", "a|compared", 100)  # not read again: complete
        await redis.hincrby(f"{prefix}{int(T0) + 10}", "a|compared", 1)  # read again: still open
        second = await read_buckets(redis, prefix, T0, now, cache=cache)
        later = await read_buckets(redis, prefix, T0 + 2 * SERIES_TTL_S, T0 + 2 * SERIES_TTL_S, cache=cache)
    finally:
        await redis.aclose()
    assert first == [(int(T0), {"a|compared": 5}), (int(T0) + 10, {"a|compared": 1})]
    assert second == [(int(T0), {"a|compared": 5}), (int(T0) + 10, {"a|compared": 2})]
    assert len(later) == 1 and all(t >= T0 + SERIES_TTL_S for _, t in cache)
