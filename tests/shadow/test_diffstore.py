"""diffstore.py: counters, latency histograms, paths and samples, in memory and in Redis + PostgreSQL."""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from support.memstore import MemoryStore

from proxy.routing.table import parse_routes
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import (
    Batch,
    PathCounts,
    RouteStats,
    Sample,
    StoreError,
    Tally,
    bucket_of,
    bucket_upper,
)


def sample(route: str = "r", signature: str = "$.a", n: int = 0, at: float | None = None) -> Sample:
    return Sample(
        route=route, signature=signature, method="GET", path=f"/x/{n}", primary="legacy",
        control_status=200, candidate_status=200,
        diff=[{"path": "$.a", "kind": "changed", "control": 1, "candidate": 2}],
        control_body='{"a":1}', candidate_body='{"a":2}', control_ms=1.5, candidate_ms=2.5,
        at=time.time() if at is None else at, request_id=f"rid-{n}",
    )  # fmt: skip


def test_buckets_are_monotonic_and_tight() -> None:
    """Each latency lands in a bucket whose upper bound is >= it and within 15 %."""
    for seconds in (0.00005, 0.0003, 0.0123, 0.5, 3.0, 42.0):
        b = bucket_of(seconds)
        assert bucket_upper(b) >= seconds * 0.999999
        assert b == 0 or bucket_upper(b - 1) < seconds
    assert bucket_of(0.010) < bucket_of(0.0116)


def test_bucket_of_is_the_bisection_of_the_upper_bounds() -> None:
    """bucket_of is bisect_left over the buckets' upper bounds, capped at the last: on every bound, between
    bounds, beyond the last, at 0, below 0 and for NaN."""
    uppers = [bucket_upper(i) for i in range(121)]
    values = [*uppers, *(u * 1.0001 for u in uppers), *(u * 0.9999 for u in uppers), 1e9, 0.0, -1.0, math.nan]
    # bucket_of computes by logarithm: the floats next to each bound, and many in between, must agree too
    values += [math.nextafter(u, 0.0) for u in uppers] + [math.nextafter(u, math.inf) for u in uppers]
    rng = random.Random(7)
    values += [10 ** rng.uniform(-7.0, 4.0) for _ in range(20_000)] + [math.inf]
    assert [bucket_of(v) for v in values] == [min(120, bisect.bisect_left(uppers, v)) for v in values]


def test_percentiles_from_histogram() -> None:
    """p50/p99 come from the cumulative histogram."""
    st = RouteStats("r", latency={"control": {bucket_of(0.01): 98, bucket_of(1.0): 2}})
    assert st.percentile("control", 0.5) == pytest.approx(bucket_upper(bucket_of(0.01)))
    assert st.percentile("control", 0.99) == pytest.approx(bucket_upper(bucket_of(1.0)))
    assert st.percentile("candidate", 0.5) is None


L_GET, L_POST = "l|e1|GET", "l|e1|POST"  # recording keys: route, epoch, method

async def record_some(store: Any) -> None:
    for _i in range(10):
        store.count("r", "seen")
        store.count("r", "compared")
        store.latency("r", "control", 0.010)
        store.latency("r", "candidate", 0.020)
    store.count("r", "matched", 7)
    store.count("r", "differed", 3)
    store.differed("r", "$.a $.b[*]", ("$.a", "$.b[*]"))
    store.differed("r", "$.a", ("$.a",))
    store.noise("r", ("$.uptime_s",))
    store.count("other", "dropped", 2)
    # Learning, per epoch and method: A/A pairs, differing comparisons with their same-shape paths, races.
    store.aa_pair(L_GET, ("$.uptime_s",))
    store.aa_pair(L_GET, ())
    store.path_diffs(L_GET, ("$.id", "$.uptime_s"), ("$.id",), 200)
    store.count(L_GET, "compared")  # that comparison's outcome, as the judge counts it
    store.path_diffs(L_POST, ("$.id",), ("$.id",), 201)
    store.count(L_POST, "learning")  # held while learning whether $.id is generated
    store.matched(L_GET, None, None, 200)
    store.path_diffs(L_GET, ("$.name",), (), 404)
    store.raced(L_GET)
    await store.flush()


async def check_stats(store: Any) -> None:
    stats = await store.stats()
    st = stats["r"]
    assert st.counters == {"seen": 10, "compared": 10, "matched": 7, "differed": 3}
    assert st.paths == {"$.a": 2, "$.b[*]": 1}
    assert st.signatures == {"$.a $.b[*]": 1, "$.a": 1}
    assert st.noise == {"$.uptime_s": 1}
    assert st.percentile("candidate", 0.5) == pytest.approx(bucket_upper(bucket_of(0.020)))
    assert stats["other"].counters == {"dropped": 2}
    assert await store.noise_paths("r") == {"$.uptime_s"}
    learn = stats["l"]
    get, post = learn.methods["GET"], learn.methods["POST"]
    assert get.counters == {"aa_pairs": 2, "compared": 2, "matched": 1, "raced": 1, "n@200": 2, "n@404": 1}
    assert (get.aa, get.cand, get.shape) == (
        {"$.uptime_s": 1}, {"$.id": 1, "$.uptime_s": 1, "$.name": 1}, {"200 $.id": 1}
    )
    assert post.counters == {"learning": 1, "n@201": 1}
    assert (post.cand, post.shape) == ({"$.id": 1}, {"201 $.id": 1})
    assert learn.cand == {"$.id": 2, "$.uptime_s": 1, "$.name": 1}  # the route: its methods summed
    # The learning's denominator: compared, raced and held comparisons of that epoch and method.
    # $.id changed with its shape in 1 of the 2 comparisons answered 200 (not in the 404's: it cannot show).
    assert await store.path_counts(L_GET) == PathCounts(
        compared=3, aa_pairs=2, aa={"$.uptime_s": 1}, candidate={"$.id": 1, "$.uptime_s": 1, "$.name": 1},
        same_shape={"$.id": 1}, present={"$.id": 2}, statuses={200: 2, 404: 1},
    )  # fmt: skip
    assert (await store.path_counts(L_POST)).compared == 1
    assert await store.path_counts("l|e1|DELETE") == PathCounts()
    assert await store.path_counts("nobody|e1|GET") == PathCounts()


def test_tally_counts_each_key_apart_while_it_remembers_the_last() -> None:
    """The tally remembers the last key it made and that key's counts: with routes and methods alternating, a
    fold and a reset generation in between, every count still lands on its own key."""
    table = parse_routes(
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:1'}\n  new: {url: 'http://127.0.0.1:2'}\n"
        "default: legacy\nroutes:\n"
        "  - {name: a, match: {path: /a}, target: legacy}\n"
        "  - {name: b, match: {path: /b}, target: legacy}\n",
        "t.yaml",
    )
    a, b = sorted(table.routes, key=lambda r: r.name)
    tally = Tally()
    ka, kb, kpost = tally.key(a, "GET"), tally.key(b, "GET"), tally.key(a, "POST")
    order = [(a, "GET"), (a, "GET"), (b, "GET"), (a, "GET"), (a, "POST"), (b, "GET"), (b, "GET")]
    for route, method in order:
        key = tally.key(route, method)
        tally.seen(key)
        tally.sampled(key)
    batch = Batch()
    tally.fold(batch)
    for counter in ("seen", "sampled"):
        assert {k: n for (_, k, name), n in batch.incr.items() if name == counter} == {ka: 3, kb: 3, kpost: 1}
    tally.seen(tally.key(a, "GET"))  # after the fold: counted again from zero
    tally.set_generations({"a": 1})  # a reset of route a: a new epoch, a new key
    ka2 = tally.key(a, "GET")
    assert ka2 != ka and tally.key(b, "GET") == kb
    tally.seen(ka2)
    tally.seen(ka2)
    batch = Batch()
    tally.fold(batch)
    assert {k: n for (_, k, name), n in batch.incr.items() if name == "seen"} == {ka: 1, ka2: 2}


def test_tally_counts_statuses_in_runs_and_folds_them_all() -> None:
    """The last status matched is counted as a native int until another comes: statuses in runs, switching
    back and forth, and a fold in the middle of a run all reach the batch's ``n@<status>`` counters."""
    table = parse_routes(
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:1'}\n  new: {url: 'http://127.0.0.1:2'}\n"
        "default: legacy\nroutes:\n  - {name: a, match: {path: /a}, target: legacy}\n",
        "t.yaml",
    )
    (a,) = table.routes
    tally = Tally()
    key = tally.key(a, "GET")

    def folded() -> dict[str, int]:
        batch = Batch()
        tally.fold(batch)
        return {name: n for (_, _, name), n in batch.incr.items() if name.startswith("n@")}

    for status in (200, 200, 404, 200, 200, 200, 401, 0, 404):  # 0: no status given, none counted
        tally.matched(key, None, None, status)
    assert folded() == {"n@200": 5, "n@404": 2, "n@401": 1}
    tally.matched(key, None, None, 404)  # the run goes on after the fold, counted from zero
    tally.matched(key, None, None, 200)
    assert folded() == {"n@404": 1, "n@200": 1}
    assert folded() == {}


async def test_memory_store_counts() -> None:
    """The in-memory store sums what was recorded."""
    store = MemoryStore()
    await record_some(store)
    await check_stats(store)


async def test_memory_store_caps_samples() -> None:
    """At most N samples per signature and M per route are kept (newest per route)."""
    store = MemoryStore(per_signature=2, per_route=3)
    for i in range(5):
        store.sample("r", sample(signature="$.a", n=i, at=1000 + i))
        store.sample("r", sample(signature="$.b", n=i, at=2000 + i))
    await store.flush()
    kept = await store.samples("r", 10)
    assert len(kept) == 3
    assert sum(s.signature == "$.a" for s in kept) <= 2


@pytest.fixture
async def real_store(redis_url: str, redis_prefix: str, shadow_db: str) -> AsyncIterator[RedisPgStore]:
    store = await RedisPgStore.connect(redis_url, shadow_db, redis_prefix, per_signature=3, per_route=5)
    async with store.pg.acquire() as conn:  # one database per module: start each test with an empty table
        await conn.execute("TRUNCATE strangler.shadow_diffs")
    yield store
    await store.aclose()


async def test_redis_store_counts_add_up_across_replicas(real_store: RedisPgStore, redis_url: str) -> None:
    """Two stores on the same prefix (two replicas) add into one picture."""
    await record_some(real_store)
    twin = RedisPgStore(aioredis.Redis.from_url(redis_url), None, real_store.prefix)
    try:
        twin.count("r", "seen", 5)
        twin.latency("r", "control", 0.010)
        await twin.flush()
    finally:
        await twin.redis.aclose()
    stats = await real_store.stats()
    assert stats["r"].counters["seen"] == 15
    assert sum(stats["r"].latency["control"].values()) == 11


async def test_redis_store_matches_memory_store(real_store: RedisPgStore) -> None:
    """The real store reads back exactly what was recorded (same checks as the in-memory one)."""
    await record_some(real_store)
    await check_stats(real_store)


async def test_matched_records_like_its_parts(real_store: RedisPgStore) -> None:
    """matched() counts compared+matched and both latencies, in memory and in Redis, like separate calls."""
    memory = MemoryStore()
    for store in (memory, real_store):
        store.matched("m", 0.004, 0.250)
        store.matched("m", 0.004, 0.001)
        await store.flush()
        st = (await store.stats())["m"]
        assert st.counters == {"compared": 2, "matched": 2}
        assert st.latency == {"control": {bucket_of(0.004): 2},
                              "candidate": {bucket_of(0.250): 1, bucket_of(0.001): 1}}  # fmt: skip


async def test_pg_samples_capped_per_signature_and_route(real_store: RedisPgStore) -> None:
    """Samples are stored with all columns, capped per signature (3) and per route (5)."""
    for i in range(6):
        real_store.sample("r", sample(signature="$.a", n=i))
    await real_store.flush()
    for sig in ("$.b", "$.c", "$.d"):
        for i in range(2):
            real_store.sample("r", sample(signature=sig, n=i))
        await real_store.flush()
    kept = await real_store.samples("r", 100)
    assert len(kept) == 5
    assert max(sum(1 for s in kept if s.signature == sig) for sig in ("$.a", "$.b", "$.c", "$.d")) <= 3
    newest = kept[0]
    assert newest.signature == "$.d"
    assert newest.diff == [{"path": "$.a", "kind": "changed", "control": 1, "candidate": 2}]
    assert (newest.control_status, newest.control_ms, newest.candidate_ms) == (200, 1.5, 2.5)
    assert newest.request_id == "rid-" + newest.path.rsplit("/", 1)[1]  # kept in its column (migration 0003)


async def test_pg_samples_on_an_older_schema_say_to_migrate(real_store: RedisPgStore) -> None:
    """A reader newer than the database's gateway schema (here: without migration 0003's column) is told to
    migrate, not shown the database's error."""
    real_store.sample("r", sample())
    await real_store.flush()
    async with real_store.pg.acquire() as conn:
        await conn.execute("ALTER TABLE strangler.shadow_diffs DROP COLUMN request_id")
    try:
        with pytest.raises(StoreError, match=r"older than this strangler .*request_id.*migrate --gateway"):
            await real_store.samples("r", 10)
    finally:
        async with real_store.pg.acquire() as conn:
            await conn.execute(  # as migration 0003 made it
                "ALTER TABLE strangler.shadow_diffs ADD COLUMN request_id text NOT NULL DEFAULT ''"
            )
    assert [s.path for s in await real_store.samples("r", 10)] == ["/x/0"]


async def test_pg_retention_deletes_old_rows(real_store: RedisPgStore) -> None:
    """Rows older than the retention period are deleted by the writer."""
    real_store.retention_days = 1.0
    real_store.sample("r", sample(signature="$.old", at=time.time() - 3 * 86400))
    real_store.sample("r", sample(signature="$.new"))
    await real_store.flush()
    assert [s.signature for s in await real_store.samples("r")] == ["$.new"]


async def test_storage_failure_is_counted_not_raised(redis_prefix: str) -> None:
    """With Redis and PostgreSQL unreachable, flush logs and drops the batch instead of raising."""
    from proxy.devstack.embedded import free_port

    port = free_port()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    pool_url = f"postgresql://nobody@127.0.0.1:{port}/none"
    store = RedisPgStore(client, None, redis_prefix)
    before = REGISTRY.get_sample_value("strangler_shadow_store_errors_total", {"part": "redis"}) or 0.0
    try:
        store.count("r", "seen")
        store.sample("r", sample())
        await store.flush()  # must not raise
        assert not store.batch
        after = REGISTRY.get_sample_value("strangler_shadow_store_errors_total", {"part": "redis"})
        assert after == before + 1
    finally:
        await client.aclose()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await RedisPgStore.connect(f"redis://127.0.0.1:{port}/0", pool_url, redis_prefix)


async def test_lenient_connect_falls_back_to_counters_only(redis_url: str, redis_prefix: str) -> None:
    """An unreachable database turns samples off instead of failing the server that opens the store."""
    from proxy.devstack.embedded import free_port

    store = await RedisPgStore.connect_lenient(
        redis_url, f"postgresql://x@127.0.0.1:{free_port()}/x", redis_prefix
    )
    try:
        assert store.pg is None
        store.count("r", "seen")
        await store.flush()
        assert (await store.stats())["r"].counters == {"seen": 1}
    finally:
        await store.aclose()
