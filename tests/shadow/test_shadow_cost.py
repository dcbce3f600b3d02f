"""The cheap shadow path: byte-identical fast path, callback calls with a swept deadline, A/A rate cap."""

from __future__ import annotations

import asyncio
import gzip

from aiohttp import web
from prometheus_client import REGISTRY
from support.clock import ManualClock
from support.memstore import MemoryStore
from support.upstreams import RawUpstream, read_request
from support.waiting import eventually

from proxy.http1.reader import READ_PLAIN
from proxy.routing.model import ShadowSettings
from proxy.routing.table import CompareRules
from proxy.shadow.bytecheck import identical, identity_headers, name_lengths, same_headers
from proxy.shadow.compare import Observed, compare
from proxy.shadow.judge import Judge
from proxy.shadow.noise import NoiseBook
from proxy.shadow.samples import SampleBuilder
from proxy.upstream.sender import Sent

from .shadow_rig import Backend, Rig, RigFactory, routes_text

USERS = "  - {name: users, match: {methods: [GET], path: /users}, target: %s, shadow: {sample: 1.0}}\n"
JSON = [(b"Content-Type", b"application/json; charset=utf-8")]
Raw = tuple[int, list[tuple[bytes, bytes]], bytes, float]


def _obs(raw: Raw) -> Observed:
    return Observed(raw[0], [(k.decode().lower(), v.decode()) for k, v in raw[1]], raw[2])


def test_identical_only_when_compare_agrees() -> None:
    """identical() is True only for same status, compared headers, encoding and bytes, and compare agrees."""
    rules = CompareRules()
    body = b'{"id":1}'
    base: Raw = (200, [*JSON, (b"Date", b"Mon")], body, 0.001)
    cases: list[tuple[Raw, bool]] = [
        ((200, [*JSON, (b"Date", b"Tue"), (b"X-Id", b"9")], body, 0.002), True),  # uncompared headers
        ((200, [(b"content-type", b"application/json; charset=utf-8")], body, 0.0), True),  # name case
        ((201, JSON, body, 0.0), False),
        ((200, [(b"Content-Type", b"text/plain")], body, 0.0), False),  # a compared header
        ((200, JSON, b'{"id":2}', 0.0), False),
        ((200, [*JSON, (b"Content-Encoding", b"gzip")], body, 0.0), False),  # same bytes, other encoding
        ((200, [*JSON, (b"Cache-Control", b"no-store")], body, 0.0), False),  # header on one side only
    ]
    two = [(b"Cache-Control", b"no-store"), *JSON, (b"Cache-Control", b"private")]
    repeated: Raw = (200, [*JSON, (b"cache-control", b"no-store"), (b"Date", b"Mon"),
                           (b"Cache-Control", b"private")], body, 0.001)  # fmt: skip
    repeated_cases: list[tuple[Raw, bool]] = [
        ((200, two, body, 0.0), True),  # same values in the same order, other places and name case
        ((200, list(reversed(two)), body, 0.0), False),  # "private, no-store" is not "no-store, private"
    ]
    for one, others in ((base, cases), (repeated, repeated_cases)):
        for other, expected in others:
            assert identical(one, other, rules) is expected, other
            if expected:
                assert compare(_obs(one), _obs(other), rules) is None
            else:
                assert identical(one, other, rules, names=identity_headers(rules)) is False
    assert identical(base, base, rules, body_cap=len(body) - 1) is False  # over the cap: hash it instead
    assert compare(_obs(repeated), _obs((200, list(reversed(two)), body, 0.0)), rules) is not None


def test_same_headers_filtered_by_name_length_answers_as_unfiltered() -> None:
    """The length mask only skips look-ups: with it, same_headers answers what it answers without it, for
    names of every length, names sharing the mask's last bit (61 characters and more) included."""
    long_a, long_b = "x-" + "a" * 70, "x-" + "b" * 59  # 72 and 61 characters: the same last bit
    rules = CompareRules(headers=("content-type", "etag", long_a))
    names = identity_headers(rules)
    mask = name_lengths(names)
    lists = [
        [], JSON, [(b"Content-Type", b"text/plain")], [(b"ETag", b'"1"'), *JSON], [*JSON, (b"etag", b'"1"')],
        [(b"Date", b"Mon"), (b"Content-Length", b"8")], [(long_a.upper().encode(), b"1")],
        [(long_b.encode(), b"1")], [(long_a.encode(), b"2"), (long_b.encode(), b"1")],
        [(b"Content-Encoding", b"gzip"), *JSON], [(b"CONTENT-ENCODING", b"gzip"), *JSON],
    ]
    answers = set()
    for one in lists:
        for other in lists:
            expected = same_headers(one, other, names)
            assert same_headers(one, other, names, mask) is expected, (one, other)
            answers.add(expected)
    assert answers == {True, False}


async def test_compared_header_difference_with_same_bytes_is_a_difference(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Same status and body bytes but another compared header: the fast path does not hide it."""
    legacy, new = backends

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"id": 1, "name": "Alice"}', content_type="text/plain")

    async def gzipped(request: web.Request) -> web.StreamResponse:
        body = gzip.compress(b'{"id": 1}', mtime=0)
        return web.Response(body=body, content_type="application/json", headers={"Content-Encoding": "gzip"})

    async def raw_gzip_bytes(request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(b'{"id": 1}', mtime=0), content_type="application/json")

    async def same(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"id": 1, "name": "Alice"}', content_type="application/json")

    legacy.handler, new.handler = same, plain
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0"))
    await rig.get("/users")
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("differed")) == (1, 1)
    assert st.paths == {"headers.content-type": 1}

    legacy.handler, new.handler = gzipped, raw_gzip_bytes
    await rig.get("/users", headers={"Accept-Encoding": "gzip"})
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("differed")) == (2, 2)  # same bytes, but one side is gzip


async def test_matched_fast_path_records_latency_per_side(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A byte-identical pair counts compared+matched and one latency per side, the candidate's its own."""
    legacy, new = backends
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"id": 1, "name": "Alice"})

    new.handler = held
    clock = ManualClock()  # the shadow calls' clock: each candidate answer takes 100 s on it
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, timeout: 600"),
                         deadline_clock=clock)  # fmt: skip
    for _ in range(3):
        arrived.clear()
        release.clear()
        await rig.get("/users")
        await eventually(arrived.is_set, what="the candidate call")
        clock.advance(100.0)
        release.set()
        await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("matched"), st.get("differed")) == (3, 3, 0)
    assert sum(st.latency["control"].values()) == 3 and sum(st.latency["candidate"].values()) == 3
    candidate_p50 = st.percentile("candidate", 0.5)  # a bucket's upper bound: 15 % resolution
    assert candidate_p50 is not None and 100.0 <= candidate_p50 < 115.0
    control_p50 = st.percentile("control", 0.5)  # measured by the data path, within this test's timeout
    assert control_p50 is not None and control_p50 < 100.0


async def test_hanging_call_fails_at_its_deadline_and_pool_recovers(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A shadow call past its timeout is failed by the sweep (candidate error); later calls work again."""
    legacy, new = backends
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"id": 1, "name": "Alice"})

    new.handler = hang
    clock = ManualClock()  # the deadlines' clock; the sweep reading it again shows it has run
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, timeout: 0.3"),
                         deadline_clock=clock)  # fmt: skip
    await rig.get("/users")
    await eventually(arrived.is_set, what="the candidate call")
    drained = asyncio.ensure_future(rig.shadower.drain())
    clock.advance(0.29)
    seen = clock.reads
    await eventually(lambda: clock.reads > seen, what="a sweep at 0.29 s")
    assert not drained.done()  # not failed before its deadline
    clock.advance(0.02)
    await drained  # failed by a sweep while the candidate still hangs (release is not set yet)
    st = (await rig.store.stats())["users"]
    assert (st.get("errors_candidate"), st.get("compared")) == (1, 0)
    release.set()
    new.handler = backends[0].handler
    await rig.get("/users")
    await asyncio.wait_for(rig.shadower.drain(), 5)
    st = (await rig.store.stats())["users"]
    assert (st.get("errors_candidate"), st.get("matched")) == (1, 1)


async def test_aa_calls_capped_per_route_noise_still_learned(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """With aa_sample 1.0 and aa_rate 3/s, a burst makes 3 A/A calls (each counted with its differing
    paths for learning), and the bucket refills over time."""
    legacy, new = backends
    calls = iter(range(10_000))
    now = [1000.0]  # the Shadower's clock, moved by the test instead of sleeping

    async def ticking(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "uptime_s": next(calls) + 0.5})

    legacy.handler = new.handler = ticking
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 1.0"), aa_rate=3.0,
                         reread_rate=0.0, clock=lambda: now[0])  # fmt: skip
    for _ in range(10):
        await rig.get("/users")
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert len(legacy.seen) == 10 + 3  # primaries plus the 3 A/A calls the bucket allowed
    get = st.methods["GET"]
    assert get.get("aa_pairs") == 3 and get.aa == {"$.uptime_s": 3}
    # Three A/A pairs are too few to call anything noise: every difference counts.
    assert get.get("compared") == 10 and get.get("differed") == 10 and get.cand == {"$.uptime_s": 10}
    now[0] += 0.7  # 2.1 tokens back
    for _ in range(3):
        await rig.get("/users")
    await rig.shadower.drain()
    assert len(legacy.seen) - 13 - 3 == 2
    st = (await rig.store.stats())["users"]
    get = st.methods["GET"]
    assert get.aa["$.uptime_s"] == 5 and get.get("aa_pairs") == 5


async def test_call_retries_once_when_a_reused_connection_dies_unanswered() -> None:
    """A GET whose pooled connection closes before any response byte is sent again on a new connection."""
    from proxy.routing.table import parse_routes
    from proxy.upstream.call import Call, build_request
    from proxy.upstream.pool import UpstreamPool

    answered: list[int] = []  # per connection: how many requests it answered

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(answered)
        answered.append(0)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if answered[index] == 1:  # a keep-alive race: the server drops the reused connection
                    break
                answered[index] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    up = f'{{url: "http://127.0.0.1:{port}"}}'
    table = parse_routes(f"upstreams:\n  legacy: {up}\n  new: {up}\ndefault: legacy\n", "t.yaml")
    pool = UpstreamPool(table.upstreams["legacy"])
    loop = asyncio.get_running_loop()
    try:
        results: list[Call] = []
        for _ in range(2):
            done = loop.create_future()
            message = build_request(pool, "GET", "/x", [], b"")
            call = Call(pool, "GET", message, 5.0, lambda c, d=done: d.set_result(c))
            call.begin()
            results.append(await asyncio.wait_for(done, 5))
        assert [(c.error, c.result and c.result[0]) for c in results] == [(None, 200), (None, 200)]
        assert results[1].result is not None and results[1].result[2] == b"ok"
        assert answered == [1, 1]  # the second call's first connection answered nothing; a new one did
        # A POST is not retried: the dead reused connection is its error.
        done = loop.create_future()
        post = Call(pool, "POST", build_request(pool, "POST", "/x", [], b"{}"), 5.0, done.set_result)
        post.begin()
        failed = await asyncio.wait_for(done, 5)
        assert failed.result is None and failed.error is not None and failed.error.kind == "connect"
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def test_other_fetchers_run_as_tasks_under_their_timeout(backends: tuple[Backend, Backend]) -> None:
    """A Fetcher that is not an UpstreamPool is called through its fetch() in a task, under the timeout."""
    from support.memstore import MemoryStore

    from proxy.routing.table import parse_routes
    from proxy.server.exchange import Exchange
    from proxy.shadow.admission import Shadower
    from proxy.upstream.pool import Headers, UpstreamPool

    legacy, new = backends
    release = asyncio.Event()

    class Wrapped:  # any object with UpstreamPool.fetch's signature, here delegating to a real pool
        def __init__(self, pool: UpstreamPool) -> None:
            self.pool = pool
            self.calls = 0

        async def fetch(
            self,
            method: str,
            path_qs: str,
            headers: Headers,
            body: bytes,
            timeout: float,  # noqa: ASYNC109
        ) -> tuple[int, Headers, bytes]:
            self.calls += 1
            return await self.pool.fetch(method, path_qs, headers, body, timeout)

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"id": 1, "name": "Alice"})

    table = parse_routes(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, timeout: 0.3"), "t.yaml")
    pools = {name: UpstreamPool(spec) for name, spec in table.upstreams.items()}
    wrapped = {name: Wrapped(pool) for name, pool in pools.items()}
    store = MemoryStore()
    shadower = Shadower(table.shadow_settings, wrapped, store)
    await shadower.start()
    route = table.routes[0]
    body = b'{"id": 1, "name": "Alice"}'
    headers = [(b"Content-Type", b"application/json; charset=utf-8")]
    ex = Exchange(route, "GET", "/users", "", [], b"", "legacy", 200, headers, body, 0.001, b"rid")
    try:
        shadower.submit(ex)
        await asyncio.wait_for(shadower.drain(), 5)
        new.handler = hang
        shadower.submit(ex)
        await asyncio.wait_for(shadower.drain(), 5)
        st = (await store.stats())["users"]
        assert (st.get("matched"), st.get("errors_candidate")) == (1, 1)
        assert wrapped["new"].calls == 2 and wrapped["legacy"].calls == 0
    finally:
        release.set()
        await shadower.close(grace=0.5)
        for pool in pools.values():
            pool.close()


def test_judge_identity_follows_the_rules_object() -> None:
    """The judge's identity cache answers for the rules object asked about, the last one kept apart too:
    alternating rules, and new rules equal to old ones, each get their own names."""
    store = MemoryStore()
    judge = Judge(
        store, 1 << 20, NoiseBook(store), SampleBuilder(ShadowSettings()), lambda: None, lambda coro: None
    )
    plain, typed = CompareRules(), CompareRules(headers=("Content-Type", "ETag"))
    for rules in [plain, typed, typed, plain, CompareRules(headers=("ETag",)), plain]:
        names, mask = judge.identity(rules)
        assert names == identity_headers(rules) and mask == name_lengths(names), rules


def test_judge_tallies_reach_the_metric_by_route_and_result() -> None:
    """Outcomes tallied in memory (matched as a native count, the last route's kept apart) reach
    ``strangler_shadow_comparisons`` at each flush, each on its own route and result, once."""
    store = MemoryStore()
    judge = Judge(
        store, 1 << 20, NoiseBook(store), SampleBuilder(ShadowSettings()), lambda: None, lambda coro: None
    )

    def metric(route: str, result: str) -> float:
        labels = {"route": route, "result": result}
        return REGISTRY.get_sample_value("strangler_shadow_comparisons_total", labels) or 0.0

    pairs = [(r, res) for r in ("tally-a", "tally-b") for res in ("matched", "differed", "learning")]
    before = {pair: metric(*pair) for pair in pairs}
    outcomes = [("tally-a", "matched"), ("tally-b", "matched"), ("tally-a", "differed"),
                ("tally-a", "matched"), ("tally-b", "learning"), ("tally-b", "matched")]  # fmt: skip
    for route, result in outcomes:
        if result == "matched" and route == "tally-b":
            judge.matched(route)
        else:
            judge.tally(route, result)
    judge.flush_tallies()
    judge.tally("tally-a", "matched")  # after a flush: counted from zero, the route's outcomes made anew
    judge.flush_tallies()
    judge.flush_tallies()  # nothing more
    added = {pair: metric(*pair) - before[pair] for pair in pairs}
    assert added == {
        ("tally-a", "matched"): 3, ("tally-a", "differed"): 1, ("tally-a", "learning"): 0,
        ("tally-b", "matched"): 2, ("tally-b", "differed"): 0, ("tally-b", "learning"): 1,
    }  # fmt: skip


BODY = b'{"id":1,"name":"Alice","pad":"' + b"x" * 60 + b'"}'
PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
    len(BODY), BODY
)


async def raw_backend(
    answers: asyncio.Event | None = None, response: bytes = PLAIN
) -> tuple[Backend, RawUpstream]:
    """A backend answering every request with ``response``, in one write (so one read on loopback); after
    ``answers`` is set when given."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            if answers is not None:
                await answers.wait()
            writer.write(response)
            await writer.drain()

    upstream = await RawUpstream(answer).start()
    return Backend("raw", port=upstream.port), upstream


def spy_same(rig: Rig) -> list[bool]:
    """Whether each pipelined copy the shadower is told about came back as its primary's bytes (`same`)."""
    seen: list[bool] = []
    real = rig.shadower._one_done

    def wrapped(call: Sent) -> None:
        seen.append(bool(getattr(call, "same", False)))
        real(call)

    rig.shadower._one_done = wrapped
    return seen


async def test_a_copy_answered_with_its_primarys_bytes_is_matched_unread(make_rig: RigFactory) -> None:
    """Both sides answer the same bytes: each copy comes back `same` (compiled build; not read at all) and
    is counted matched, with its latency, as the byte check would have counted it."""
    (legacy, up1), (new, up2) = await raw_backend(), await raw_backend()
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, body_cap: 1000"))
    seen = spy_same(rig)
    for _ in range(5):
        assert (await rig.get("/users"))[2] == BODY
    await rig.shadower.drain()
    assert seen == [READ_PLAIN is not None] * 5
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("matched"), st.get("differed"), st.get("n@200")) == (5, 5, 0, 5)
    assert sum(st.latency["control"].values()) == 5 and sum(st.latency["candidate"].values()) == 5
    await up1.close()
    await up2.close()


async def test_a_same_copy_over_a_cap_lowered_meanwhile_is_compared_by_hash(make_rig: RigFactory) -> None:
    """The body cap lowered (a reload) while a copy is out: its answer, the primary's bytes, is compared
    by hash like any body over the cap (the primary's status, headers and body stand for it), and matches."""
    release = asyncio.Event()
    (legacy, up1), (new, up2) = await raw_backend(), await raw_backend(release)
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, body_cap: 1000"))
    seen = spy_same(rig)
    assert (await rig.get("/users"))[2] == BODY
    rig.shadower.set_settings(ShadowSettings(aa_sample=0.0, body_cap=10))
    release.set()
    await rig.shadower.drain()
    assert seen == [READ_PLAIN is not None]
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("matched"), st.get("differed")) == (1, 1, 0)
    await up1.close()
    await up2.close()


async def test_a_copy_with_its_primarys_status_body_and_compared_headers_is_matched_unread(
    make_rig: RigFactory,
) -> None:
    """Two services that answer alike but for headers the route does not compare (Date, X-Powered-By,
    the names' case): each copy comes back `same` (compiled build: its status, body and compared headers
    checked where it was read) and is counted matched; a compared header that differs is read, and
    differs."""
    other = PLAIN.replace(b"Content-Type:", b"content-type:").replace(
        b"\r\n\r\n", b"\r\nDate: Tue, 08 Dec 2026 00:00:00 GMT\r\nX-Powered-By: Express\r\n\r\n"
    )
    (legacy, up1), (new, up2) = await raw_backend(), await raw_backend(response=other)
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0, body_cap: 1000"))
    seen = spy_same(rig)
    for _ in range(3):
        assert (await rig.get("/users"))[2] == BODY
    await rig.shadower.drain()
    assert seen == [READ_PLAIN is not None] * 3
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("matched"), st.get("differed")) == (3, 3, 0)
    await up2.close()

    typed = PLAIN.replace(b"application/json", b"application/json; charset=utf-8")
    new2, up3 = await raw_backend(response=typed)
    rig2 = await make_rig(routes_text(legacy, new2, USERS % "legacy", "aa_sample: 0, body_cap: 1000"))
    seen2 = spy_same(rig2)
    assert (await rig2.get("/users"))[2] == BODY
    await rig2.shadower.drain()
    assert seen2 == [False]
    st = (await rig2.store.stats())["users"]
    assert (st.get("compared"), st.get("differed")) == (1, 1)
    await up1.close()
    await up3.close()
