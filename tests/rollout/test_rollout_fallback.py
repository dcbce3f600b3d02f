"""New failing behind fallback still counts as new failing: a canary whose requests legacy answers in new's
place (new down) is rolled back by the leader, and the gateway's /routes shows the stage it applies."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from rollout_rig import Served
from support.opshelp import start_gateway, upstream
from support.waiting import eventually

from proxy.autopilot.evidence import plan_of
from proxy.rollout.served import ServedReader, side_counts
from proxy.rollout.state import RouteState, commit, events, keys, load, plan_digest
from proxy.routing.table import load_routes


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def auto_routes(legacy: str, new: str) -> str:
    """/items/{id} on target: auto (stages 0 and 100), fallback on connect, rollback after 5 requests."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "{legacy}", connect_timeout: 1.0, timeout: 10.0}}\n'
        f'  new: {{url: "{new}", connect_timeout: 1.0, timeout: 10.0}}\n'
        "default: legacy\n"
        "fallback: {connect: true}\n"
        "rollout:\n"
        "  stages: [0, 100]\n"
        "  gate: {min_s: 3600, min_count: 1000}\n"
        "  rollback: {min_count: 5}\n"
        "routes:\n"
        "  - name: items\n"
        '    match: {methods: [GET], path: "/items/{id}"}\n'
        "    target: auto\n"
    )


async def test_fallbacks_count_as_new_failures_in_the_served_window(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """Each fallback flushed adds a failed request to new's counts (connect as a connect error), once: a
    second flush adds only the fallbacks since; a circuit fallback (new not tried) adds nothing."""
    served = Served(aredis, redis_prefix)
    fallbacks: dict[tuple[str, str], int] = {("items", "connect"): 3, ("items", "timeout"): 1}
    served.flusher.fallbacks = lambda: fallbacks
    served.observe("items", "legacy", 200, n=4)  # what the observer saw of those requests
    served.observe("items", "new", 200, n=6)
    await served.flush(1000.0)
    fallbacks[("items", "circuit")] = 2
    await served.flush(1001.0)
    await served.flush(1002.0)
    fields = await ServedReader(aredis, keys(redis_prefix).served).window(1000.0, 1003.0)
    new = side_counts(fields, "items", "new")
    assert (new.requests, new.errors_5xx, new.connect_errors) == (10, 4, 3)
    assert side_counts(fields, "items", "legacy").requests == 4


async def test_a_canary_served_by_fallback_is_rolled_back(
    tmp_path: Path, redis_url: str, redis_prefix: str, aredis: aioredis.Redis
) -> None:
    """New down at 100 %: every request is answered by legacy (X-Strangler-Fallback: connect, no client
    error), and the leader rolls the route back to 0 % on new's connect errors."""
    async with upstream("legacy") as leg:
        path = tmp_path / "routes.yaml"
        path.write_text(auto_routes(leg.url, f"http://127.0.0.1:{closed_port()}"))
        plan = plan_of(next(r for r in load_routes(str(path)).routes if r.name == "items"))
        at_100 = RouteState(1, 100, False, time.time(), "set by the test", plan_digest(plan))
        assert await commit(aredis, redis_prefix, "items", None, at_100, None) == 1
        env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix}
        gw = await start_gateway(path, "--no-access-log", env=env)
        try:
            async with aiohttp.ClientSession() as session:

                async def applied() -> int | None:
                    async with session.get(gw.admin_url + "/routes") as resp:
                        doc = await resp.json()
                    stage = next(r for r in doc["routes"] if r["name"] == "items").get("stage_bp")
                    return stage if stage == 10000 and doc["rollout"]["leader"] else None

                await eventually(applied, what="the gateway applying 100 % and leading")
                for i in range(20):
                    async with session.get(f"{gw.url}/items/{i}") as resp:
                        assert resp.status == 200
                        assert resp.headers["X-Strangler-Fallback"] == "connect"
                        assert (await resp.json())["backend"] == "legacy"

                async def rolled_back() -> bool:
                    evs = [e for e in await events(aredis, redis_prefix, "items") if e.action == "rollback"]
                    state = (await load(aredis, redis_prefix)).get("items")
                    return bool(evs) and state is not None and state.percent == 0

                await eventually(rolled_back, what="the leader rolling items back", last=gw.tail)
            rollback = next(e for e in await events(aredis, redis_prefix, "items") if e.action == "rollback")
            assert rollback.evidence["new"]["connect_errors"] >= 5
            assert "rollback.connect_error_rate" in rollback.why
        finally:
            await gw.stop()
