"""The shadow's injected clocks: A/A rate, noise refresh, sample interval, deadlines and the store's
once-a-minute jobs move with them, not with time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from support.memstore import MemoryStore

from proxy.routing.table import ShadowSettings
from proxy.shadow.noise import MIN_AA_PAIRS, NOISE_REFRESH_S, AaLimiter, Countdown, NoiseBook
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.samples import SAMPLE_INTERVAL_S, SampleBuilder
from proxy.shadow.store import Sample

from .shadow_rig import Backend, RigFactory, routes_text

USERS = "  - {name: users, match: {methods: [GET], path: /users}, target: legacy, shadow: {sample: 1.0}}\n"


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_aa_limiter_allows_a_burst_then_refills_with_the_clock() -> None:
    """rate tokens per route at first; none more until the clock moves; refilled at rate per second."""
    clock = Clock()
    aa = AaLimiter(2.0, clock)
    assert [aa.due("r") for _ in range(4)] == [True, True, False, False]
    assert aa.due("other") is True  # each route has its own bucket
    clock.now += 0.49  # 0.98 tokens: not yet one
    assert aa.due("r") is False
    clock.now += 0.02
    assert [aa.due("r") for _ in range(2)] == [True, False]
    clock.now += 60.0  # a long pause refills no more than the burst
    assert [aa.due("r") for _ in range(3)] == [True, True, False]


def test_countdown_draws_the_gap_to_each_hit() -> None:
    """A hit's gap is 1 + floor(log(1 - u) / log(1 - share)) draws, one rand() a hit; share 1 hits every
    draw and 0 none, without a rand(); a changed share draws a new gap; a rand() of 1.0 is taken."""
    draws = iter([0.0, 0.5, 0.9, 0.3])
    count = Countdown(lambda: next(draws))
    # gaps 1 (u 0.0), 2 (u 0.5: log 0.5 / log 0.5 = 1), 4 (u 0.9: log 0.1 / log 0.5 = 3.32)
    assert [count.hit(0.5) for _ in range(7)] == [True, False, True, False, False, False, True]

    def no_draw() -> float:
        raise AssertionError("drew a random number")

    sure = Countdown(no_draw)
    assert all(sure.hit(1.0) for _ in range(50)) and not any(sure.hit(0.0) for _ in range(50))
    assert sure.hit(1.0) is True  # a changed share: a new gap at once
    longest = Countdown(lambda: 1.0)  # u 1.0, taken as the float below it: log 2^-53 / log 0.5, the gap 54
    assert [longest.hit(0.5) for _ in range(60)].index(True) == 53


def test_countdown_hits_the_share_of_draws() -> None:
    """Over many draws the hits are the share of them, and so are the hits right after a hit: each draw on its
    own, not one hit every 1 / share draws (seeded: the same draws every run)."""
    rand = random.Random(13).random
    for share, n in ((0.1, 100_000), (0.5, 20_000), (0.01, 200_000)):
        count = Countdown(rand)
        hits = [count.hit(share) for _ in range(n)]
        sigma = (share * (1 - share) / n) ** 0.5
        assert abs(sum(hits) / n - share) < 4 * sigma, (share, sum(hits) / n)
        after_hit = [b for a, b in itertools.pairwise(hits) if a]
        rate = sum(after_hit) / len(after_hit)
        assert abs(rate - share) < 4 * (share * (1 - share) / len(after_hit)) ** 0.5, (share, rate)


async def test_noise_book_reads_the_store_again_only_when_stale() -> None:
    """Learned noise is cached for NOISE_REFRESH_S on the clock, then read from the store again."""
    clock = Clock()
    store = MemoryStore()
    book = NoiseBook(store, clock)
    get, post = "r|e1|GET", "r|e1|POST"  # recording keys: route, epoch, method
    assert book.fresh(get) is None

    def teach(path: str) -> None:  # as often between two control calls as against the candidate
        for i in range(MIN_AA_PAIRS):
            store.aa_pair(get, (path,) if i % 4 == 0 else ())
            if i % 4 == 0:
                store.path_diffs(get, (path,), ())
                store.count(get, "compared")
            else:
                store.matched(get, None, None)

    teach("$.a")
    await store.flush()
    assert (await book.learned(get)).noise == {"$.a"}
    teach("$.b")
    await store.flush()
    clock.now += NOISE_REFRESH_S
    fresh = book.fresh(get)
    assert fresh is not None and fresh.noise == {"$.a"}  # still fresh
    assert (await book.learned(get)).noise == {"$.a"}
    clock.now += 0.001
    assert book.fresh(get) is None
    assert (await book.learned(get)).noise == {"$.a", "$.b"}
    assert (await book.learned(post)).noise == set()  # per method
    assert (await book.learned("r|e2|GET")).noise == set()  # per epoch


def test_sample_builder_builds_one_per_signature_per_interval() -> None:
    """due() is True once per route and signature every SAMPLE_INTERVAL_S of the clock."""
    clock = Clock()
    samples = SampleBuilder(ShadowSettings(), clock)
    assert [samples.due("r", "$.a"), samples.due("r", "$.a"), samples.due("r", "$.b")] == [True, False, True]
    clock.now += SAMPLE_INTERVAL_S - 0.001
    assert samples.due("r", "$.a") is False
    clock.now += 0.001
    assert samples.due("r", "$.a") is True


async def test_shadower_samples_differences_on_its_clock(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """The Shadower's clock decides when a difference with a known signature is sampled again."""
    legacy, new = backends
    count = iter(range(10_000))

    async def counting(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "n": next(count)})

    new.handler = counting
    clock = Clock()
    rig = await make_rig(routes_text(legacy, new, USERS, "aa_sample: 0"), clock=clock)
    for _ in range(3):
        await rig.get("/users")
    await rig.shadower.drain()
    assert len(await rig.store.samples("users")) == 1  # one signature, sampled once per interval
    clock.now += SAMPLE_INTERVAL_S
    for _ in range(2):
        await rig.get("/users")
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("differed"), len(await rig.store.samples("users"))) == (5, 2)


async def test_sweep_fails_calls_past_their_deadline_on_its_clock(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A hanging shadow call with a 30 s timeout fails as soon as the deadline clock passes 30 s."""
    legacy, new = backends
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.wait_for(release.wait(), 60)
        return web.json_response({"id": 1, "name": "Alice"})

    new.handler = hang
    loop = asyncio.get_running_loop()
    ahead = [0.0]
    rig = await make_rig(routes_text(legacy, new, USERS, "aa_sample: 0, timeout: 30"),
                         deadline_clock=lambda: loop.time() + ahead[0])  # fmt: skip
    try:
        await rig.get("/users")
        await asyncio.wait_for(arrived.wait(), 5)  # the shadow call is out and hanging
        ahead[0] = 30.0
        await asyncio.wait_for(rig.shadower.drain(), 5)
        st = (await rig.store.stats())["users"]
        assert (st.get("errors_candidate"), st.get("compared")) == (1, 0)
    finally:
        release.set()


async def test_store_logs_a_failing_part_once_a_minute_on_its_clock(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down every flush fails and is counted, but logged once per minute of the store's clock."""
    from proxy.devstack.embedded import free_port

    clock = Clock()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = RedisPgStore(client, None, redis_prefix, clock=clock)
    logged: list[int] = []
    try:
        with caplog.at_level(logging.ERROR, logger="strangler.shadow.store"):
            for step in (0.0, 30.0, 29.9, 0.1, 1.0):
                clock.now += step
                store.count("r", "seen")
                await store.flush()
                logged.append(sum("not written to Redis" in r.getMessage() for r in caplog.records))
    finally:
        await client.aclose()
    assert logged == [1, 1, 1, 2, 2]


async def test_store_expires_old_samples_once_a_minute_on_its_clock(
    redis_url: str, redis_prefix: str, shadow_db: str
) -> None:
    """The retention sweep runs at the first sample write, then again only after 60 s of the store's clock."""
    clock = Clock()
    client = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.create_pool(shadow_db, min_size=1, max_size=2)
    store = RedisPgStore(client, pg, redis_prefix, retention_days=1.0, clock=clock)

    def old(signature: str) -> Sample:
        three_days_ago = time.time() - 3 * 86400
        return Sample(route="r", signature=signature, method="GET", path="/x", primary="legacy",
                      control_status=200, candidate_status=200, diff=[], at=three_days_ago)  # fmt: skip

    async def kept() -> list[str]:
        return sorted(s.signature for s in await store.samples("r", 100))

    try:
        await pg.execute("TRUNCATE strangler.shadow_diffs")
        for signature, step in (("$.a", 0.0), ("$.b", 60.0), ("$.c", 0.001)):
            clock.now += step
            store.sample("r", old(signature))
            await store.flush()
            if signature == "$.a":
                assert await kept() == []  # the first write sweeps
            elif signature == "$.b":
                assert await kept() == ["$.b"]  # 60 s later: not more than a minute yet
        assert await kept() == []  # past the minute: swept again
    finally:
        await client.aclose()
        await pg.close()
