"""Rollout state and the leader's lease in the real Redis: plan changes reconciled, the compare-and-set
write with its audit event, lease exclusivity, renewal and takeover after expiry."""

from __future__ import annotations

import redis.asyncio as aioredis
from rollout_rig import PLAN
from support.clock import ManualClock
from support.waiting import eventually

from proxy.rollout.lease import Lease
from proxy.rollout.state import (
    CHANGED,
    NOT_LEADER,
    WRITTEN,
    Event,
    RouteState,
    commit,
    events,
    initial,
    keys,
    load,
    plan_digest,
    reconcile,
)  # fmt: skip
from proxy.routing.model import Gate, RolloutPlan


def test_an_unchanged_plan_needs_no_reconciling() -> None:
    """A state decided under the current plan is left as it is."""
    assert reconcile(initial(PLAN, 5.0), PLAN, 9.0) is None


def test_a_changed_plan_keeps_a_stage_it_still_has() -> None:
    """New gates, same 10 % stage: the route stays at 10 % (its new index) and keeps its start time."""
    state = RouteState(1, 10, False, 5.0, "promoted", plan_digest(PLAN), base_at=0, base={"users|new|n": 7})
    plan = RolloutPlan(stages=(0, 1, 10, 100), gate=Gate(min_s=1))
    fixed = reconcile(state, plan, 9.0)
    assert fixed is not None
    new, why = fixed
    assert (new.stage, new.percent, new.since, new.digest) == (2, 10, 5.0, plan_digest(plan))
    assert (new.base_at, new.base) == (0, {"users|new|n": 7})  # the stage goes on: its base too
    assert "stays at 10%" in why


def test_a_stored_stage_that_does_not_fit_its_plan_is_reconciled() -> None:
    """Same plan, but a stage index edited by hand past its end: reconciled by percent, not an IndexError."""
    state = RouteState(9, 10, False, 5.0, "edited", plan_digest(PLAN))
    fixed = reconcile(state, PLAN, 9.0)
    assert fixed is not None and fixed[0].percent in PLAN.stages
    assert fixed[0].stage == PLAN.stages.index(fixed[0].percent)


async def test_a_malformed_entry_is_skipped_not_fatal(aredis: aioredis.Redis, redis_prefix: str) -> None:
    """A state entry that is JSON but not an object (or not JSON) leaves the other routes' states readable."""
    good = RouteState(1, 10, False, 5.0, "promoted", plan_digest(PLAN))
    await aredis.hset(keys(redis_prefix).state, mapping={"users": good.to_json(), "posts": b"[1, 2]",
                                                          "other": b"not json"})  # fmt: skip
    states = await load(aredis, redis_prefix)
    assert list(states) == ["users"] and states["users"].percent == 10


def test_a_changed_plan_without_the_stage_clamps_down_never_up() -> None:
    """A 50 % route whose new plan has 10 and 100: it goes to 10 %, a fresh stage start."""
    state = RouteState(3, 50, True, 5.0, "promoted", "old")
    fixed = reconcile(state, RolloutPlan(stages=(0, 10, 100)), 9.0)
    assert fixed is not None
    new, why = fixed
    assert (new.stage, new.percent, new.since, new.paused) == (1, 10, 9.0, True)
    assert "clamped to 10%" in why


async def test_commit_writes_state_and_event_only_over_the_state_it_read(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """The write is a compare-and-set: over the state read it lands (with its stream event); over a state
    someone else changed meanwhile it does not."""
    first = initial(PLAN, 1.0)
    assert await commit(aredis, redis_prefix, "users", None, first, None) == WRITTEN
    assert await commit(aredis, redis_prefix, "users", None, first, None) == CHANGED  # no longer absent
    stored = (await load(aredis, redis_prefix))["users"]
    assert stored == first
    moved = RouteState(1, 10, False, 2.0, "gate held", first.digest)
    ev = Event("users", 0, 10, "promote", "me", "gate held", {"compared": 50}, 2.0)
    assert await commit(aredis, redis_prefix, "users", stored, moved, ev) == WRITTEN
    assert await commit(aredis, redis_prefix, "users", stored, first, None) == CHANGED  # stale read
    assert (await load(aredis, redis_prefix))["users"] == moved
    (got,) = await events(aredis, redis_prefix, "users")
    assert (got.action, got.from_pct, got.to_pct, got.who, got.evidence) == (
        "promote",
        0,
        10,
        "me",
        {"compared": 50},
    )


async def test_commit_with_an_owner_needs_the_lease(aredis: aioredis.Redis, redis_prefix: str) -> None:
    """A leader's write lands only while it holds the lease: a deposed one writes nothing."""
    lease = Lease(aredis, keys(redis_prefix).leader, "a")
    assert (
        await commit(aredis, redis_prefix, "users", None, initial(PLAN, 1.0), None, owner="a") == NOT_LEADER
    )
    assert await lease.tick()
    assert await commit(aredis, redis_prefix, "users", None, initial(PLAN, 1.0), None, owner="a") == WRITTEN
    assert await load(aredis, redis_prefix) != {}


async def test_one_lease_holder_at_a_time_and_renewal_keeps_it(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """Two contenders: one holds, the other does not; renewals (a third of the TTL apart) keep it held;
    released, the other takes it."""
    clock = ManualClock()
    key = keys(redis_prefix).leader
    a = Lease(aredis, key, "a", ttl_s=30, clock=clock)
    b = Lease(aredis, key, "b", ttl_s=30, clock=clock)
    assert [await a.tick(), await b.tick()] == [True, False]
    for _ in range(5):
        clock.advance(11)  # past a third of the TTL: a renews
        assert [await a.tick(), await b.tick()] == [True, False]
    assert await a.holder() == "a"
    await a.release()
    assert await b.tick() and await b.holder() == "b"
    assert not await a.tick()


async def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew_it(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """A holder that stops renewing loses the lease when Redis expires it; the next contender takes it and
    the old holder's renewal (compare-and-set) fails instead of extending the new one's."""
    key = keys(redis_prefix).leader
    clock = ManualClock()
    a = Lease(aredis, key, "a", ttl_s=0.2, clock=clock)
    b = Lease(aredis, key, "b", ttl_s=30, clock=clock)
    assert await a.tick()
    await eventually(b.tick, what="b taking the lease once a's expired")
    clock.advance(1)
    assert not await a.tick()
    assert await b.holder() == "b"
