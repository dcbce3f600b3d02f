"""The controller against the real Redis, on an injected clock: two processes' controllers share one
Redis and only the lease holder writes transitions; every sync applies what the leader wrote; a route is
promoted through its stages on its evidence, rolled back on a trigger, and keeps its stage across a
restart; plan changes are reconciled; without Redis auto routes stay at stage 0."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from rollout_rig import PLAN, Served, compare, route, table
from support.clock import ManualClock
from support.waiting import eventually

from proxy.autopilot.controller import Controller
from proxy.ops.metrics import RequestStats
from proxy.ops.serve import open_autopilot
from proxy.rollout.state import CHANGED, WRITTEN, Event, commit, events, load
from proxy.routing.table import RouteTable
from proxy.server.gateway import Gateway

TRANSITIONS_TOTAL = "strangler_rollout_transitions_total"


class Stages:
    """The data path's side of the interface: the last mapping it was given."""

    def __init__(self) -> None:
        self.seen: list[dict[str, int]] = []

    def __call__(self, mapping: dict[str, int]) -> None:
        self.seen.append(mapping)

    @property
    def last(self) -> dict[str, int] | None:
        return self.seen[-1] if self.seen else None


def controller(
    redis: aioredis.Redis, prefix: str, t: RouteTable, clock: ManualClock, apply: Stages | None = None,
    owner: str = "",
) -> Controller:  # fmt: skip
    box = [t]
    ctl = Controller(
        redis, prefix, lambda: box[0], apply, clock=clock, owner=owner or None, lease_clock=clock
    )
    ctl.box = box  # type: ignore[attr-defined]  # the test swaps the table through it
    return ctl


async def test_two_controllers_only_the_lease_holder_writes_transitions(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """Two processes' controllers on one Redis: each decides every tick, one writes; the route is
    promoted once, by that one, and both apply the same stage."""
    clock = ManualClock()
    t = table()
    a_stages, b_stages = Stages(), Stages()
    a = controller(aredis, redis_prefix, t, clock, a_stages, "a")
    b = controller(aredis, redis_prefix, t, clock, b_stages, "b")
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    for _ in range(3):
        await b.decide_once()
        assert await a.decide_once() == []  # a never leads while b renews
        clock.advance(31)
    written = await events(aredis, redis_prefix)
    assert written and {e.who for e in written} == {b.owner}  # b asked first, so b holds the lease
    assert [e.action for e in written if e.route == "users"] == ["promote"]
    await a.sync_once()
    await b.sync_once()
    assert a_stages.last == b_stages.last == {"users": 1000, "posts": 0}


async def test_the_sync_applies_a_stage_another_process_wrote(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """A follower running its loop applies the leader's promotion on its next poll."""
    clock = ManualClock()
    t = table()
    leader = controller(aredis, redis_prefix, t, clock, owner="leader")
    assert await leader.lease.tick()  # the leader first: the follower's own decide loop then only follows
    seen = Stages()
    follower = Controller(aredis, redis_prefix, lambda: t, seen, clock=clock, sync_s=0.05, decide_s=3600)
    task = asyncio.create_task(follower.run())
    try:
        await eventually(lambda: seen.last == {"users": 0, "posts": 0}, what="stage 0 applied")
        await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
        assert await leader.decide_once() == []  # min_s not reached yet
        clock.advance(31)
        (ev,) = [e for e in await leader.decide_once() if e.route == "users"]
        assert (ev.action, ev.to_pct) == ("promote", 10)
        await eventually(
            lambda: seen.last == {"users": 1000, "posts": 0}, what="10 % applied", last=lambda: seen.last
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_canary_is_promoted_on_served_traffic_and_rolled_back_on_errors(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stage 10 %: too few requests served by new holds it; enough good ones promote it to 100 %; then
    new's 5xx over the trigger roll it back to shadowing, with the evidence in the audit event, a log
    line and the transitions metric."""
    clock = ManualClock(100_000.0)
    t = table({"users": PLAN})
    ctl = controller(aredis, redis_prefix, t, clock, owner="leader")
    served = Served(aredis, redis_prefix)
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    await ctl.decide_once()
    clock.advance(31)
    assert [e.to_pct for e in await ctl.decide_once()] == [10]
    clock.advance(31)
    served.observe("users", "new", 200, n=5)
    served.observe("users", "legacy", 200, n=50)
    await served.flush(clock())
    assert await ctl.decide_once() == []
    assert any("5 of 10 requests served by new" in r for r in ctl.last["users"].reasons)
    served.observe("users", "new", 200, n=20)
    await served.flush(clock())
    (up,) = await ctl.decide_once()
    assert (up.action, up.from_pct, up.to_pct) == ("promote", 10, 100)
    assert up.evidence["new"]["requests"] == 25 and up.evidence["verdict"] == "READY"
    clock.advance(20)
    served.observe("users", "new", 200, n=20)
    served.observe("users", "new", 503, n=5)
    await served.flush(clock())
    rollbacks = REGISTRY.get_sample_value(TRANSITIONS_TOTAL, {"route": "users", "action": "rollback"}) or 0
    with caplog.at_level(logging.INFO, logger="strangler"):
        (down,) = await ctl.decide_once()
    (line,) = [r for r in caplog.records if r.getMessage() == "rollout transition"]
    assert line.fields["action"] == "rollback" and line.fields["evidence"]["new"]["errors_5xx"] == 5  # type: ignore[attr-defined]
    after = REGISTRY.get_sample_value(TRANSITIONS_TOTAL, {"route": "users", "action": "rollback"})
    assert after == rollbacks + 1
    assert (down.action, down.to_pct) == ("rollback", 0) and "rollback.error_rate" in down.why
    assert down.evidence["new"]["errors_5xx"] == 5
    state = (await load(aredis, redis_prefix))["users"]
    assert (state.stage, state.percent, state.since) == (0, 0, clock())
    assert await ctl.decide_once() == []  # back at stage 0: its gate's min_s starts again


async def test_the_stage_survives_a_controller_restart(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """A new controller (a restarted gateway) applies the stored stage at once and continues from it."""
    clock = ManualClock()
    t = table({"users": PLAN})
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    first = controller(aredis, redis_prefix, t, clock, owner="first")
    await first.decide_once()
    clock.advance(31)
    assert len(await first.decide_once()) == 1
    await first.lease.release()
    stages = Stages()
    second = controller(aredis, redis_prefix, t, clock, stages, owner="second")
    await second.sync_once()
    assert stages.last == {"users": 1000}
    assert await second.decide_once() == []  # the 10 % stage's gate needs traffic: no reset to 0
    assert (await load(aredis, redis_prefix))["users"].percent == 10


async def test_a_plan_change_is_reconciled_with_an_event(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """routes.yaml's plan for a 10 % route loses its 10 % stage: the leader clamps it to the stage below
    and records a plan-changed event; manual routes are never written."""
    clock = ManualClock()
    t = table({"users": PLAN})
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    ctl = controller(aredis, redis_prefix, t, clock, owner="leader")
    await ctl.decide_once()
    clock.advance(31)
    await ctl.decide_once()
    ctl.box[0] = table({"users": replace(PLAN, stages=(0, 5, 100))})  # type: ignore[attr-defined]
    written = await ctl.decide_once()
    assert [(e.action, e.from_pct, e.to_pct) for e in written] == [("plan-changed", 10, 5)]
    assert set(await load(aredis, redis_prefix)) == {"users"}  # posts and health are manual here


async def test_without_redis_auto_routes_stay_at_stage_0_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No REDIS_URL: the data path gets stage 0 for every auto route, and one warning line says why."""
    t = table()
    gateway = Gateway(t)
    gateway.stages = {"users": 5000}
    with caplog.at_level(logging.WARNING, logger="strangler"):
        async with open_autopilot(gateway, RequestStats(), env={}) as ctl:
            assert ctl is None
    assert gateway.stages == {"users": 0, "posts": 0}
    assert [r.getMessage() for r in caplog.records if "rollout" in r.getMessage()] == [
        "rollout: no REDIS_URL, so target: auto routes stay at stage 0 (shadowing only)"
    ]


async def test_the_gateway_s_autopilot_runs_its_controller_on_the_shadow_redis(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """With REDIS_URL and the prefix in the env, the serving process's controller applies the stages
    through the gateway's set_stages and flushes what the observer counted into Redis."""
    t = table({"users": PLAN})
    gateway = Gateway(t)
    stats = RequestStats()
    stats.observe("users", "legacy", 200, 0.004)
    env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix}
    async with open_autopilot(gateway, stats, env=env) as ctl:
        assert ctl is not None
        await eventually(lambda: gateway.stages == {"users": 0}, what="stage 0 applied")

        async def flushed() -> bool:
            keys = [k async for k in aredis.scan_iter(match=redis_prefix + "rollout:served:*")]
            return bool(keys)

        await eventually(flushed, what="served counts in Redis")
        await eventually(lambda: aredis.exists(redis_prefix + "rollout:leader"), what="a leader")
    assert not await aredis.exists(redis_prefix + "rollout:leader")  # released on stop


async def test_a_pause_by_hand_holds_the_leader_and_a_stale_decision_never_overwrites_it(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """A route paused between the leader's read and its write keeps the pause (compare-and-set); the
    leader's next round holds it, saying it is paused."""
    clock = ManualClock()
    t = table({"users": PLAN})
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    ctl = controller(aredis, redis_prefix, t, clock, owner="leader")
    await ctl.decide_once()
    clock.advance(31)
    read = (await load(aredis, redis_prefix))["users"]
    paused = replace(read, paused=True, why="paused by hand")
    pause = Event("users", 0, 0, "pause", "cli:someone", "paused by hand", {}, clock())
    assert await commit(aredis, redis_prefix, "users", read, paused, pause) == WRITTEN
    stale = replace(read, stage=1, percent=10)  # what a leader decided on the state it read before
    assert await commit(aredis, redis_prefix, "users", read, stale, None, owner="leader") == CHANGED
    assert await ctl.decide_once() == []
    assert ctl.last["users"].reasons[0].startswith("paused by hand")
    assert (await load(aredis, redis_prefix))["users"].paused


async def test_an_unreachable_redis_is_logged_once_and_the_loops_keep_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: each loop logs one warning (not one per tick) and nothing reaches the data path."""
    from proxy.devstack.embedded import free_port

    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    stages = Stages()
    clock = ManualClock()
    ctl = Controller(
        client,
        "t:down:",
        lambda: table(),
        stages,
        served=lambda: ({}, {}),
        clock=clock,
        sync_s=0.01,
        decide_s=0.01,
    )  # the flusher reads the clock on every sync tick: the ticks are counted
    with caplog.at_level(logging.WARNING, logger="strangler"):
        task = asyncio.create_task(ctl.run())
        try:
            await eventually(lambda: clock.reads >= 20, what="the sync loop's ticks")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
    failures = sorted(r.getMessage() for r in caplog.records if "failed; retrying" in r.getMessage())
    assert failures == ["rollout decide failed; retrying", "rollout sync failed; retrying"]
    assert stages.seen == []


async def test_a_stage_after_a_rollback_does_not_count_the_outage_before_it(
    aredis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    """New's connect errors roll a canary back; promoted again within the same 10 s served bucket, the
    new stage counts only what new served since it began (its base is taken off), so good traffic
    promotes it instead of the old errors rolling it back again."""
    clock = ManualClock(100_000.0)
    quick = replace(PLAN, gate=replace(PLAN.gate, min_s=1.0))
    t = table({"users": quick})
    ctl = controller(aredis, redis_prefix, t, clock, owner="leader")
    served = Served(aredis, redis_prefix)
    await compare(redis_url, redis_prefix, route(t, "users"), matched=20)
    await ctl.decide_once()
    clock.advance(2)
    assert [e.to_pct for e in await ctl.decide_once()] == [10]
    clock.advance(1)
    served.observe("users", "new", 502, n=10)  # new down: every request it was given failed
    await served.flush(clock())
    (down,) = await ctl.decide_once()
    assert (down.action, down.evidence["new"]["connect_errors"]) == ("rollback", 10)
    clock.advance(2)
    (up,) = await ctl.decide_once()
    assert (up.action, up.to_pct) == ("promote", 10)
    state = (await load(aredis, redis_prefix))["users"]
    assert state.base_at == 100_000 and state.base["users|new|502"] == 10
    clock.advance(1)
    served.observe("users", "new", 200, n=10)  # new is back
    await served.flush(clock())
    (again,) = await ctl.decide_once()
    assert (again.action, again.to_pct) == ("promote", 100)
    assert (again.evidence["new"]["requests"], again.evidence["new"]["connect_errors"]) == (10, 0)
