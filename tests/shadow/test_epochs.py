"""Epochs in the real store (Redis + PostgreSQL): a flip, a reset by hand, a return to an earlier
configuration each start a new epoch; counts, noise and samples of the current epoch only; history kept,
capped and expiring."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from support.clock import ManualClock

from proxy.report.model import NOT_READY, READY, build_report
from proxy.routing.table import Route, parse_routes
from proxy.shadow import redis_counters
from proxy.shadow.redis_pg import GENERATIONS_EVERY_S, STRAGGLER_S, RedisPgStore
from proxy.shadow.store import ANY_METHOD, Sample, split_key

from .shadow_rig import Backend, RigFactory, routes_text
from .test_shadow import USERS

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    routes:
      - name: users
        match: {methods: [GET, DELETE], path: "/users/{id}"}
        target: legacy
        shadow: {sample: 1.0}
""")


def users(target: str = "legacy", ignore: tuple[str, ...] = ()) -> Route:
    route = parse_routes(ROUTES.replace("target: legacy", f"target: {target}"), "routes.yaml").routes[0]
    if ignore:
        route = dataclasses.replace(route, compare=dataclasses.replace(route.compare, ignore=ignore))
    return route


def diff_sample(signature: str) -> Sample:
    return Sample(route="users", signature=signature, method="GET", path="/users/1", primary="legacy",
                  control_status=200, candidate_status=200, diff=[])  # fmt: skip


@pytest.fixture
async def clocks() -> tuple[ManualClock, ManualClock]:
    """(monotonic, wall) clocks of the gateway's store."""
    return ManualClock(), ManualClock(1_700_000_000.0)


@pytest.fixture
async def store(
    redis_url: str, redis_prefix: str, shadow_db: str, clocks: tuple[ManualClock, ManualClock]
) -> AsyncIterator[RedisPgStore]:
    s = await RedisPgStore.connect_lenient(
        redis_url, shadow_db, redis_prefix, clock=clocks[0], wall=clocks[1]
    )
    try:
        assert s.pg is not None
        await s.pg.execute("DELETE FROM strangler.shadow_diffs WHERE route = 'users'")
        yield s
    finally:
        await s.aclose()


def record(store: RedisPgStore, route: Route, method: str, matched: int, differed: int = 0) -> str:
    key = store.key(route, method)
    for _ in range(matched):
        store.matched(key, 0.001, 0.001)
    for _ in range(differed):
        store.count(key, "compared")
        store.differed(key, "$.name", ("$.name",))
        store.count(key, "differed")
    return key


async def test_counts_are_kept_per_epoch_and_method(store: RedisPgStore) -> None:
    """One route, two methods: the stats sum them and keep each apart, in the route's epoch."""
    route = users()
    get = record(store, route, "GET", 5, 1)
    delete = record(store, route, "DELETE", 2)
    store.noise(get, ("$.at",))
    await store.flush()
    assert split_key(get) == ("users", f"{route.fingerprint}.0", "GET")
    st = (await store.stats())["users"]
    assert st.get("compared") == 8 and st.get("matched") == 7 and st.get("differed") == 1
    assert sorted(st.methods) == ["DELETE", "GET"]
    assert st.methods["GET"].get("compared") == 6 and st.methods["GET"].paths == {"$.name": 1}
    assert st.methods["DELETE"].get("compared") == 2 and st.methods["DELETE"].paths == {}
    assert await store.noise_paths(get) == {"$.at"} and await store.noise_paths(delete) == set()
    assert st.epoch is not None and st.epoch.id == f"{route.fingerprint}.0"
    assert st.epoch.reason == "first recorded" and st.epoch.config["target"] == "legacy"


async def test_a_flip_starts_a_new_epoch_and_the_report_counts_only_it(
    store: RedisPgStore, clocks: tuple[ManualClock, ManualClock]
) -> None:
    """After the flip the stats are the new epoch's alone; the earlier one is kept as history."""
    before = users("legacy")
    old_key = record(store, before, "GET", 10, 2)
    store.sample(old_key, diff_sample("$.old"))
    await store.flush()
    clocks[1].advance(600)
    after = users("new")
    assert after.fingerprint != before.fingerprint
    new_key = record(store, after, "GET", 3)
    assert new_key != old_key
    await store.flush()
    st = (await store.stats())["users"]
    assert st.get("compared") == 3 and st.get("differed") == 0 and st.paths == {}
    assert st.epoch is not None and st.epoch.reason == "the flip (legacy -> new)"
    assert st.epoch.started == clocks[1].now
    assert await store.samples("users", 10, st.epoch.id) == []  # the old epoch's sample is not shown
    assert [s.signature for s in await store.samples("users", 10)] == ["$.old"]  # but kept
    history = (await store.stats(history=True))["users"].history
    assert [(e.reason, e.compared, e.differed) for e in history] == [
        ("first recorded", 12, 2), ("the flip (legacy -> new)", 3, 0)
    ]


async def test_a_reset_by_hand_is_seen_by_the_gateway_and_the_report(
    store: RedisPgStore, redis_url: str, redis_prefix: str, clocks: tuple[ManualClock, ManualClock]
) -> None:
    """`strangler report --reset` (another client on the same Redis) raises the route's generation: the
    report shows the new epoch at once, the gateway records into it at its next generations read."""
    route = users()
    record(store, route, "GET", 10, 5)
    await store.flush()
    report = RedisPgStore(aioredis.Redis.from_url(redis_url), None, redis_prefix)
    try:
        epoch = await report.reset("users")
        assert epoch is not None and epoch.id == f"{route.fingerprint}.1"
        st = (await report.stats())["users"]
        assert st.epoch is not None and st.epoch.id == epoch.id and st.epoch.reason == "reset by hand"
        assert st.get("compared") == 0
        clocks[0].advance(GENERATIONS_EVERY_S)
        await store.flush()  # reads the generations again
        key = record(store, route, "GET", 4)
        assert split_key(key)[1] == epoch.id
        await store.flush()
        st = (await report.stats())["users"]
        assert st.get("compared") == 4 and st.get("differed") == 0 and st.epoch is not None
        assert st.epoch.reason == "reset by hand"
        assert await report.reset("nobody") is None
    finally:
        await report.redis.aclose()


async def test_back_to_an_earlier_configuration_is_a_fresh_epoch(
    store: RedisPgStore, clocks: tuple[ManualClock, ManualClock]
) -> None:
    """Flip and flip back (a rollback): the legacy epoch's old counts do not come back. A count for the
    epoch just left (a shadow call in flight across the reload) is a straggler, not a rollback."""
    legacy, new = users("legacy"), users("new")
    record(store, legacy, "GET", 10, 10)
    await store.flush()
    record(store, new, "GET", 1)
    await store.flush()
    straggler = record(store, legacy, "GET", 1)
    await store.flush()
    assert split_key(straggler)[1] == f"{legacy.fingerprint}.0"
    st = (await store.stats())["users"]
    assert st.get("compared") == 1 and st.epoch is not None and st.epoch.reason == "the flip (legacy -> new)"
    clocks[0].advance(STRAGGLER_S)
    record(store, legacy, "GET", 1)  # the rollback: this configuration had an epoch already
    await store.flush()  # registering it again raises the generation ...
    key = record(store, legacy, "GET", 2)  # ... so the keys are made anew in a fresh epoch
    await store.flush()
    assert split_key(key)[1] == f"{legacy.fingerprint}.1"
    st = (await store.stats())["users"]
    assert st.get("compared") == 2 and st.get("differed") == 0
    assert st.epoch is not None and st.epoch.reason == "the flip (new -> legacy)"


async def test_compare_rules_change_starts_an_epoch(store: RedisPgStore) -> None:
    record(store, users(), "GET", 1)
    await store.flush()
    record(store, users(ignore=("$.at",)), "GET", 1)
    await store.flush()
    st = (await store.stats())["users"]
    assert st.get("compared") == 1
    assert st.epoch is not None and st.epoch.reason == "routes.yaml changed: compare rules"


async def test_old_epochs_are_capped_and_expire(store: RedisPgStore) -> None:
    """Registering one more epoch than the cap deletes the oldest one's keys; every key has a TTL."""
    redis, prefix = store.redis, store.prefix
    route = users()
    first = record(store, route, "GET", 1)
    record(store, route, ANY_METHOD, 0)
    store.count(store.key(route, ANY_METHOD), "unanswered:new:timeout")
    await store.flush()
    first_base = redis_counters.epoch_prefix(prefix, "users", split_key(first)[1])
    assert await redis.exists(first_base + "c:GET", first_base + "methods") == 2
    config: dict[str, Any] = {"target": "legacy"}
    for i in range(1, 3):
        await redis_counters.register(redis, prefix, "users", f"x.{i}", config, 1e9 + i, max_epochs=2)
    assert await redis.exists(first_base + "c:GET", first_base + "c:*", first_base + "methods") == 0
    assert sorted(k.decode() for k in await redis.hkeys(prefix + "epochs:users")) == ["x.1", "x.2"]
    second = record(store, users("new"), "GET", 1)
    await store.flush()
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    assert keys and all([await redis.ttl(k) > 0 for k in keys])
    assert split_key(second)[1] in {k.decode() for k in await redis.hkeys(prefix + "epochs:users")}


async def test_a_flip_through_the_gateway_starts_a_new_epoch(
    make_rig: RigFactory, backends: tuple[Backend, Backend], redis_url: str, redis_prefix: str
) -> None:
    """Real traffic: new differs while legacy serves; the route is flipped by a reload (and the bug
    fixed); the report then counts only the comparisons made since the flip, and says so."""
    legacy, new = backends

    async def renamed(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "name": "Alice!"})

    new.handler = renamed
    store = await RedisPgStore.connect(redis_url, None, redis_prefix)
    settings = "aa_sample: 0, min_compared: 3, ready_min_s: 0, ready_min_count: 0"
    text = routes_text(legacy, new, USERS % "legacy", settings)
    rig = await make_rig(text, store=store)
    try:
        for _ in range(3):
            assert (await rig.get("/users"))[0] == 200
        await rig.shadower.drain()
        before = build_report(await store.stats(), rig.table).route("users")
        assert before is not None and (before.compared, before.differed, before.verdict) == (3, 3, NOT_READY)
        new.handler = backends[0].handler  # fixed: answers like legacy
        flipped = parse_routes(text.replace("target: legacy", "target: new"), "shadow-test.yaml")
        rig.gateway.set_table(flipped)
        rig.shadower.set_table(flipped)
        for _ in range(4):
            assert (await rig.get("/users"))[0] == 200
        await rig.shadower.drain()
        rr = build_report(await store.stats(), flipped).route("users")
        assert rr is not None and (rr.compared, rr.differed, rr.paths, rr.verdict) == (4, 0, [], READY)
        assert rr.epoch is not None and rr.epoch["reason"] == "the flip (legacy -> new)"
        assert [m.method for m in rr.methods] == ["GET"]
        history = (await store.stats(history=True))["users"].history
        assert [(e.compared, e.differed) for e in history] == [(3, 3), (4, 0)]
    finally:
        await store.aclose()
