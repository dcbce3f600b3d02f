"""Served-traffic counts: the flusher adds only what the observer counted since its last flush, into
time buckets every process shares; a window sums them, with 5xx, connect errors (502) and p99."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from rollout_rig import Served

from proxy.devstack.embedded import free_port
from proxy.rollout.decide import SideCounts
from proxy.rollout.served import EVIDENCE_S, ServedReader, evidence_start, side_counts
from proxy.rollout.state import keys


async def test_two_processes_flushes_add_up_and_a_window_sums_its_buckets(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """Two observers flushing into the same buckets; a second flush adds only the new requests; a window
    from a later bucket leaves the earlier one out."""
    one, two = Served(aredis, redis_prefix), Served(aredis, redis_prefix)
    one.observe("users", "new", 200, 0.005, n=90)
    one.observe("users", "new", 502, 0.5, n=2)
    two.observe("users", "new", 500, 0.05, n=8)
    two.observe("users", "legacy", 200, 0.005, n=300)
    await one.flush(1000.0)
    await two.flush(1001.0)
    await one.flush(1002.0)  # nothing new: nothing added
    one.observe("users", "new", 200, 0.005, n=10)
    await one.flush(1015.0)  # the next bucket
    reader = ServedReader(aredis, keys(redis_prefix).served)
    fields = await reader.window(1000.0, 1016.0)
    new = side_counts(fields, "users", "new")
    assert (new.requests, new.errors_5xx, new.connect_errors) == (110, 10, 2)
    assert new.p99_s == 1.0  # 2 of 110 slower than 0.1 s: the 99th percentile is in the 1 s bucket
    assert side_counts(fields, "users", "legacy") == SideCounts(300, 0, 0, 0.01)
    later = await reader.window(1010.0, 1016.0)
    assert side_counts(later, "users", "new").requests == 10


def test_no_traffic_is_no_rate_and_no_p99() -> None:
    """A side that served nothing has no error rate and no p99 (not zero: unknown)."""
    counts = side_counts({}, "users", "new")
    assert (counts.error_rate, counts.connect_rate, counts.p99_s) == (None, None, None)


async def test_a_failed_flush_keeps_its_counts_for_the_next(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """Redis unreachable at one flush: nothing is lost, the next flush writes those counts too."""
    one = Served(aredis, redis_prefix)
    one.observe("users", "new", 502, n=5)
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    one.flusher.redis = dead
    with pytest.raises(aioredis.ConnectionError):
        await one.flush(1000.0)
    await dead.aclose()
    one.flusher.redis = aredis
    one.observe("users", "new", 200, n=3)
    await one.flush(1001.0)
    fields = await ServedReader(aredis, keys(redis_prefix).served).window(1000.0, 1002.0)
    assert side_counts(fields, "users", "new").requests == 8


async def test_a_window_reaches_back_at_most_evidence_s(aredis: aioredis.Redis, redis_prefix: str) -> None:
    """A stage that began long ago is judged on its last EVIDENCE_S: older buckets are not read."""
    one = Served(aredis, redis_prefix)
    one.observe("users", "new", 500, n=50)
    await one.flush(1000.0)  # an old outage
    one.observe("users", "new", 200, n=20)
    now = 1000.0 + EVIDENCE_S + 100
    await one.flush(now)
    start = evidence_start(900.0, now)
    fields = await ServedReader(aredis, keys(redis_prefix).served).window(start, now)
    assert side_counts(fields, "users", "new").requests == 20 and start == now - EVIDENCE_S
