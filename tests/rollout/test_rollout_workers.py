"""A real `strangler proxy --workers 2` on one Redis: both workers add what they served into the same
buckets, exactly one worker holds the leader's lease, and when it dies another takes the lease over."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from support.opshelp import routes_text, start_gateway, upstream
from support.waiting import eventually

from proxy.rollout.served import side_counts
from proxy.rollout.state import keys

pytestmark = pytest.mark.slow


async def served(client: aioredis.Redis, prefix: str) -> int:
    total: dict[str, int] = {}
    async for key in client.scan_iter(match=keys(prefix).served + "*"):
        for name, n in (await client.hgetall(key)).items():
            total[name.decode()] = total.get(name.decode(), 0) + int(n)
    return side_counts(total, "items", "legacy").requests


async def test_two_workers_share_served_counts_and_one_lease(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Every request either worker served is counted once in Redis; one worker leads; killed, the lease
    passes to another worker (after its TTL) and the supervisor's replacement joins as a follower."""
    client = aioredis.Redis.from_url(redis_url)
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "legacy"))
        env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix}
        gw = await start_gateway(path, "--workers", "2", "--no-access-log", env=env)
        try:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(60):
                    async with session.get(gw.url + "/items/1") as resp:
                        assert resp.status == 200
            counts: list[int] = [0]

            async def all_counted() -> bool:
                counts[0] = await served(client, redis_prefix)
                return counts[0] == 60

            await eventually(all_counted, what="the 60 served requests counted", last=lambda: counts[0])
            leader = keys(redis_prefix).leader

            async def holder() -> str | None:
                raw = await client.get(leader)
                return raw.decode() if raw is not None else None

            first = await eventually(holder, what="a leader")
            pid = int(first.split(":")[-2])
            assert pid != gw.proc.pid  # a worker leads, not the supervisor
            os.kill(pid, signal.SIGKILL)

            async def taken_over() -> str | None:
                now = await holder()
                return now if now is not None and now != first else None

            second = await eventually(taken_over, what="another worker holding the lease")
            assert int(second.split(":")[-2]) != pid
        finally:
            await gw.stop()
            await client.aclose()
