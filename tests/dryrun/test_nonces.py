"""The nonce stores: each nonce is claimed once within its ttl (in memory, and in a real Redis)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from proxy.dryrun import MemoryNonceStore, RedisNonceStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_claims_once_then_forgets_after_ttl() -> None:
    """A nonce is refused while remembered and accepted again once its ttl has passed."""
    clock = Clock()
    store = MemoryNonceStore(clock=clock)
    assert await store.claim("a", 10)
    assert not await store.claim("a", 10)
    clock.now += 10
    assert await store.claim("a", 10)


async def test_memory_is_bounded_forgetting_the_oldest() -> None:
    """Past max_entries the oldest nonce is forgotten, so memory stays bounded."""
    store = MemoryNonceStore(max_entries=2, clock=Clock())
    for nonce in ("a", "b", "c"):
        assert await store.claim(nonce, 60)
    assert len(store) == 2
    assert not await store.claim("c", 60)
    assert await store.claim("a", 60)  # forgotten first


async def test_memory_drops_expired_entries() -> None:
    """Expired nonces are dropped on the next claim, not kept until the bound is hit."""
    clock = Clock()
    store = MemoryNonceStore(clock=clock)
    await store.claim("a", 5)
    await store.claim("b", 5)
    clock.now += 6
    await store.claim("c", 5)
    assert len(store) == 1


def test_memory_refuses_a_zero_bound() -> None:
    """A bound below 1 is a configuration error naming the parameter."""
    with pytest.raises(ValueError, match="max_entries"):
        MemoryNonceStore(max_entries=0)


async def test_redis_claims_once_across_store_instances(redis_url: str, redis_prefix: str) -> None:
    """Two stores on one Redis (two replicas of a service) accept a nonce once between them."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        first, second = RedisNonceStore(client, redis_prefix), RedisNonceStore(client, redis_prefix)
        assert await first.claim("n1", 30)
        assert not await second.claim("n1", 30)
        assert 0 < await client.ttl(redis_prefix + "n1") <= 30
    finally:
        await client.aclose()
