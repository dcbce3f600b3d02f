"""The shadow's injected clock: A/A rate, learned-noise refresh and sample interval move with it, not time."""

from __future__ import annotations

from aiohttp import web
from support.memstore import MemoryStore

from proxy.routing.table import ShadowSettings
from proxy.shadow.noise import NOISE_REFRESH_S, AaLimiter, NoiseBook
from proxy.shadow.samples import SAMPLE_INTERVAL_S, SampleBuilder

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


async def test_noise_book_reads_the_store_again_only_when_stale() -> None:
    """Learned noise is cached for NOISE_REFRESH_S on the clock, then read from the store again."""
    clock = Clock()
    store = MemoryStore()
    book = NoiseBook(store, clock)
    assert book.fresh("r") is None
    store.noise("r", ("$.a",))
    await store.flush()
    assert await book.paths("r") == {"$.a"}
    store.noise("r", ("$.b",))
    await store.flush()
    clock.now += NOISE_REFRESH_S
    assert book.fresh("r") == {"$.a"} and await book.paths("r") == {"$.a"}  # still fresh
    clock.now += 0.001
    assert book.fresh("r") is None
    assert await book.paths("r") == {"$.a", "$.b"}


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
