"""Shadow storage stays bounded under ever-new diff signatures, against real Redis and PostgreSQL.

Redis: distinct paths and signatures per route are capped (the rest counted under ``(other)``), and
every key has a TTL. PostgreSQL: sample slots are decided before inserting (no row inserted only to be
trimmed), the row count is capped, and the most frequent signature always keeps examples.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from proxy.shadow.redis_counters import OTHER, hash_key
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import Sample


def sample(signature: str, n: int = 0) -> Sample:
    return Sample(
        route="r", signature=signature, method="GET", path=f"/x/{n}", primary="legacy",
        control_status=200, candidate_status=200,
        diff=[{"path": signature, "kind": "changed", "control": 1, "candidate": 2}],
        at=time.time(),
    )  # fmt: skip


@pytest.fixture
async def store(redis_url: str, redis_prefix: str, shadow_db: str) -> AsyncIterator[RedisPgStore]:
    store = await RedisPgStore.connect(
        redis_url, shadow_db, redis_prefix, per_signature=3, per_route=10, max_fields=100
    )
    assert store.pg is not None
    await store.pg.execute("TRUNCATE strangler.shadow_diffs")
    yield store
    await store.aclose()


async def test_redis_fields_capped_with_other_bucket_and_ttl(store: RedisPgStore) -> None:
    """3,000 one-off signatures and paths (and learning paths) on a route: at most 100 fields each (+
    ``(other)``), nothing lost from the totals, the frequent signature counted exactly, and every key
    expiring."""
    for i in range(3000):
        store.differed("r", "$.name", ("$.name",))
        store.differed("r", f"$.x{i}", (f"$.x{i}",))
        store.noise("r", (f"$.n{i}",))
        store.aa_pair("r", (f"$.a{i}",))
        store.path_diffs("r", (f"$.c{i}",), (f"$.s{i}",))
        if i % 500 == 499:
            await store.flush()
    await store.flush()
    redis = store.redis
    for kind in ("sigs", "paths", "noise", "aa", "cand", "shape"):
        raw = await redis.hgetall(hash_key(store.prefix, kind, "r"))
        fields = {k.decode(): int(v) for k, v in raw.items()}
        assert len(fields) <= 101, kind
        assert OTHER in fields, kind
        assert sum(fields.values()) == (6000 if kind in ("sigs", "paths") else 3000), kind
    stats = (await store.stats())["r"]
    assert stats.signatures["$.name"] == 3000
    # Learning reads the full hashes: ``(other)`` is no path (nor a status).
    counts = await store.path_counts("r")
    assert len(counts.same_shape) == 100 and OTHER not in counts.same_shape and "" not in counts.same_shape
    assert counts.statuses == {0: 3000}
    keys = [k async for k in redis.scan_iter(match=store.prefix + "*")]
    assert keys
    for k in keys:
        assert await redis.ttl(k) > 0, k


async def rows(store: RedisPgStore) -> list[tuple[int, str]]:
    assert store.pg is not None
    got = await store.pg.fetch(
        "SELECT id, signature FROM strangler.shadow_diffs WHERE route = 'r' ORDER BY id"
    )
    return [(r["id"], r["signature"]) for r in got]


async def test_pg_slots_keep_frequent_signatures_and_do_not_churn(store: RedisPgStore) -> None:
    """A route full of one-off signatures makes room for a frequent one (up to its quota), which then
    keeps its examples while hundreds of new one-offs arrive; those are neither inserted nor deleted."""
    for i in range(10):  # the route fills with one-off signatures first
        store.differed("r", f"$.one{i}", (f"$.one{i}",))
        store.sample("r", sample(f"$.one{i}"))
    await store.flush()
    assert len(await rows(store)) == 10
    for i in range(50):  # then the common difference shows up
        store.differed("r", "$.name", ("$.name",))
        if i % 10 == 0:
            store.sample("r", sample("$.name", i))
    await store.flush()
    before = await rows(store)
    assert len(before) == 10
    assert sum(sig == "$.name" for _, sig in before) == 3  # its quota, taken from one-offs
    for i in range(200):  # ever-new one-off signatures
        store.differed("r", f"$.new{i}", (f"$.new{i}",))
        store.sample("r", sample(f"$.new{i}"))
        if i % 20 == 19:
            await store.flush()
    assert await rows(store) == before  # no insert, no delete: the slots were decided before writing
    assert store.pg is not None
    newest = await store.samples("r", 100)
    assert len(newest) == 10 and sum(s.signature == "$.name" for s in newest) == 3
