"""shadow.py through the real data path: sampling, control/candidate, writes as dry runs, noise, drops."""

from __future__ import annotations

import asyncio
import gzip

import orjson
from aiohttp import web
from prometheus_client import REGISTRY
from support.memstore import MemoryStore
from support.waiting import eventually

from proxy.routing.table import CompareRules, Route, ShadowSettings, ShadowSpec, parse_routes
from proxy.shadow import dryrun
from proxy.shadow.admission import Shadower

from .shadow_rig import Backend, RigFactory, routes_text

USERS = "  - {name: users, match: {methods: [GET], path: /users}, target: %s, shadow: {sample: 1.0}}\n"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_identical_backends_match(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """Every sampled GET is replayed to the other backend, compared and counted as matched."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0"))
    before = metric("strangler_shadow_comparisons_total", route="users", result="matched")
    for _ in range(5):
        status, _, body = await rig.get("/users")
        assert status == 200 and orjson.loads(body)["name"] == "Alice"
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("seen"), st.get("sampled"), st.get("compared"), st.get("matched")) == (5, 5, 5, 5)
    assert st.get("differed") == 0
    assert len(legacy.seen) == 5 and len(new.seen) == 5
    assert sum(st.latency["control"].values()) == 5 and sum(st.latency["candidate"].values()) == 5
    assert metric("strangler_shadow_comparisons_total", route="users", result="matched") == before + 5


async def test_client_dry_run_header_reaches_neither_side(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A client's own X-Strangler-Dry-Run on a shadowed GET reaches neither the primary nor the copy: the data
    path drops it, and the copy is sent from the forwarded lines as they are (Replayer.pipe_get)."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0"))
    headers = {"X-Strangler-Dry-Run": "t=1,n=a,sig=00", "X-Other": "kept"}
    assert (await rig.get("/users", headers=headers))[0] == 200
    await rig.shadower.drain()
    assert len(legacy.seen) == 1 and len(new.seen) == 1
    for seen in (legacy.seen[0], new.seen[0]):
        names = {k.lower() for k in seen["headers"]}
        assert "x-strangler-dry-run" not in names and "x-other" in names
    assert (await rig.store.stats())["users"].get("matched") == 1


async def test_unsampled_and_unshadowed_routes(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """sample 0 and routes without shadow: never replayed."""
    legacy, new = backends
    routes = (
        "  - {name: zero, match: {methods: [GET], path: /zero}, target: legacy, shadow: {sample: 0.0}}\n"
        "  - {name: plain, match: {methods: [GET], path: /plain}, target: legacy}\n"
    )
    rig = await make_rig(routes_text(legacy, new, routes))
    for path in ("/zero", "/plain", "/zero"):
        assert (await rig.get(path))[0] == 200
    await rig.shadower.drain()
    assert new.seen == []
    stats = await rig.store.stats()
    assert list(stats) == ["zero"] and stats["zero"].counters == {"seen": 2}  # seen, never sampled


async def test_sampling_fraction_and_seen_count() -> None:
    """wants() samples the configured fraction and counts every request of a shadowed route as seen."""
    draws = iter([0.05, 0.5, 0.2, 0.9] * 5)
    store = MemoryStore()
    shadower = Shadower(ShadowSettings(), {}, store, rand=lambda: next(draws))
    route = Route("s", frozenset({"GET"}), "/s", "legacy", ShadowSpec(0.25, False, 1.0), CompareRules(), 1)
    picked = [shadower.wants(route, "GET") for _ in range(20)]
    assert picked == [True, False, True, False] * 5
    await store.flush()
    assert (await store.stats())["s"].counters == {"seen": 20}


async def test_difference_recorded_with_path(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """A field difference is counted with its JSON path and stored as a sample, which names its request
    (the id the client got back)."""
    legacy, new = backends

    async def renamed(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "name": "Alice!"})

    new.handler = renamed
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0"))
    status, headers, body = await rig.get("/users?limit=1")
    assert status == 200 and orjson.loads(body)["name"] == "Alice"  # the client gets legacy's answer
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert st.get("differed") == 1 and st.paths == {"$.name": 1} and st.signatures == {"$.name": 1}
    (sample,) = await rig.store.samples("users")
    assert sample.path == "/users?limit=1" and sample.primary == "legacy"
    (rid,) = [v for k, v in headers.items() if k.lower() == "x-request-id"]
    assert sample.request_id == rid and len(rid) == 36  # the UUID the gateway made for it
    assert sample.diff == [{"path": "$.name", "kind": "changed", "control": "Alice", "candidate": "Alice!"}]
    assert '"Alice!"' in sample.candidate_body


async def test_legacy_is_control_after_flip(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """With new serving, the copy goes to legacy and legacy is still the control."""
    legacy, new = backends

    async def created(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "name": "Alice"}, status=201)

    new.handler = created
    rig = await make_rig(routes_text(legacy, new, USERS % "new", "aa_sample: 0"))
    assert (await rig.get("/users"))[0] == 201  # new serves
    await rig.shadower.drain()
    (sample,) = await rig.store.samples("users")
    assert (sample.primary, sample.control_status, sample.candidate_status) == ("new", 200, 201)
    assert len(legacy.seen) == 1


async def test_writes_shadowed_only_as_signed_dry_run(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A write on an opted-in route goes to new once, with a valid dry-run signature; legacy gets one."""
    legacy, new = backends
    routes = "  - {name: w, match: {methods: [POST, GET], path: /users}, target: legacy, " \
             "shadow: {sample: 1.0, writes: true}}\n"  # fmt: skip
    rig = await make_rig(routes_text(legacy, new, routes, "aa_sample: 0"), secret=b"k3y")
    status, _, _ = await rig.request("POST", "/users?x=1", data=b'{"name":"a"}',
                                     headers={"Content-Type": "application/json",
                                              "X-Strangler-Dry-Run": "t=1,sig=forged"})  # fmt: skip
    assert status == 200
    await rig.shadower.drain()
    assert [r["method"] for r in legacy.seen] == ["POST"]
    (copy,) = new.seen
    assert copy["method"] == "POST" and copy["body"] == b'{"name":"a"}'
    signature = copy["headers"]["X-Strangler-Dry-Run"]
    assert dryrun.verify(b"k3y", signature, "POST", "/users?x=1", b'{"name":"a"}')
    assert "forged" not in copy["headers"]["X-Strangler-Dry-Run"]
    assert (await rig.store.stats())["w"].get("compared") == 1


async def test_writes_not_shadowed_without_opt_in_or_secret(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Without writes: true a POST is not copied; without a dry-run secret it is skipped and counted."""
    legacy, new = backends
    routes = ("  - {name: ro, match: {methods: [POST], path: /ro}, target: legacy, shadow: {sample: 1.0}}\n"
              "  - {name: rw, match: {methods: [POST], path: /rw}, target: legacy, "
              "shadow: {sample: 1.0, writes: true}}\n")  # fmt: skip
    rig = await make_rig(routes_text(legacy, new, routes), secret=None)
    assert (await rig.request("POST", "/ro", data=b"{}"))[0] == 200
    assert (await rig.request("POST", "/rw", data=b"{}"))[0] == 200
    await rig.shadower.drain()
    assert new.seen == []
    assert (await rig.store.stats())["rw"].get("skipped") == 1


async def test_write_never_shadowed_to_legacy() -> None:
    """A write on a route served by new is never copied (legacy has no dry run): counted as skipped."""
    store = MemoryStore()
    shadower = Shadower(ShadowSettings(), {}, store, secret=b"s")
    route = Route("flipped", frozenset({"POST"}), "/x", "new", ShadowSpec(1.0, True, 1.0), CompareRules(), 1)
    assert not shadower.wants(route, "POST")
    assert shadower.wants(route, "GET")
    await store.flush()
    assert (await store.stats())["flipped"].get("skipped") == 1


async def test_compressed_and_capped_bodies(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """gzip bodies compare decoded; bodies over body_cap compare by hash; the client gets bytes untouched."""
    legacy, new = backends
    doc = orjson.dumps({"items": list(range(50))})
    big = b"x" * 5000

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        if request.path == "/big":
            return web.Response(body=big, content_type="text/plain")
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=gzip.compress(doc), headers=headers)

    async def new_h(request: web.Request) -> web.StreamResponse:
        if request.path == "/big":
            return web.Response(
                body=big if request.query.get("same") else big[:-1] + b"y", content_type="text/plain"
            )
        return web.Response(body=doc, content_type="application/json")

    legacy.handler, new.handler = legacy_h, new_h
    big_route = "  - {name: big, match: {methods: [GET], path: /big}, target: legacy, shadow: {sample: 1}}\n"
    routes = USERS % "legacy" + big_route
    rig = await make_rig(routes_text(legacy, new, routes, "aa_sample: 0, body_cap: 1000"))
    _status, headers, body = await rig.get("/users")
    assert headers.get("Content-Encoding") == "gzip" and body == gzip.compress(doc)
    await rig.get("/big?same=1")
    await rig.get("/big")
    await rig.shadower.drain()
    stats = await rig.store.stats()
    assert stats["users"].get("matched") == 1
    assert stats["big"].get("matched") == 1 and stats["big"].paths == {"body": 1}


async def test_queue_full_drops_and_counts(backends: tuple[Backend, Backend]) -> None:
    """When the bounded queue is full, submissions are dropped and counted, never blocking."""
    from proxy.server.exchange import Exchange

    store = MemoryStore()
    shadower = Shadower(ShadowSettings(queue=2, concurrency=1), {}, store)  # not started: nothing drains
    route = Route("q", frozenset({"GET"}), "/q", "legacy", ShadowSpec(1.0, False, 1.0), CompareRules(), 1)
    ex = Exchange(route, "GET", "/q", "", [], b"", "legacy", 200, [], b"{}", 0.001, b"rid")
    before = metric("strangler_shadow_dropped_total", route="q")
    for _ in range(10):
        shadower.submit(ex)  # a plain call, no await: it cannot wait for room (its cost: bench/micro.py)
    await store.flush()
    st = (await store.stats())["q"]
    assert (st.get("sampled"), st.get("dropped")) == (10, 8)
    assert metric("strangler_shadow_dropped_total", route="q") == before + 8


async def test_hanging_shadow_does_not_slow_primary(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """With the shadow backend hanging, every primary response arrives while the shadow calls still hang.

    The order of events is the property: had a primary waited for its shadow copy, it could not have
    been answered before the copies were released. (The p99 cost of shadowing is bench/gateway.py's.)
    """
    legacy, new = backends
    release = asyncio.Event()
    hung = {"started": 0, "ended": 0}

    async def hang(request: web.Request) -> web.StreamResponse:
        hung["started"] += 1
        await release.wait()
        hung["ended"] += 1
        return web.json_response({})

    new.handler = hang
    rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "queue: 50, concurrency: 4, timeout: 10"))
    try:
        for _ in range(200):
            status, _, body = await rig.get("/users")
            assert status == 200 and orjson.loads(body) == {"id": 1, "name": "Alice"}
        await eventually(lambda: hung["started"] >= 4, what="the 4 shadow workers hanging",
                         last=lambda: dict(hung))  # fmt: skip
        assert hung["ended"] == 0  # every primary was answered while its shadow copies hung
        await rig.store.flush()
        st = (await rig.store.stats())["users"]
        assert st.get("dropped") >= 100  # 4 hanging workers + 50 queued; the rest were dropped
    finally:
        release.set()


async def test_dead_store_never_reaches_the_client(
    make_rig: RigFactory, backends: tuple[Backend, Backend], redis_prefix: str
) -> None:
    """With Redis unreachable, clients get their responses and shadowing keeps going (failures counted)."""
    import redis.asyncio as aioredis

    from proxy.devstack.embedded import free_port
    from proxy.shadow.redis_pg import RedisPgStore

    legacy, new = backends
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = RedisPgStore(dead, None, redis_prefix)
    before = metric("strangler_shadow_store_errors_total", part="redis")
    try:
        rig = await make_rig(routes_text(legacy, new, USERS % "legacy", "aa_sample: 0"), store=store)
        for _ in range(5):
            status, _, body = await rig.get("/users")
            assert status == 200 and orjson.loads(body)["name"] == "Alice"
        await rig.shadower.drain()
        assert len(new.seen) == 5
        assert metric("strangler_shadow_store_errors_total", part="redis") > before
    finally:
        await dead.aclose()


async def test_queue_bounded_in_bytes() -> None:
    """Large bodies fill the queue's byte budget before its count: further ones are dropped and counted."""
    from proxy.server.exchange import Exchange
    from proxy.shadow.admission import MAX_QUEUED_BYTES

    store = MemoryStore()
    shadower = Shadower(ShadowSettings(queue=1000, concurrency=1), {}, store)  # not started
    route = Route("b", frozenset({"GET"}), "/b", "legacy", ShadowSpec(1.0, False, 1.0), CompareRules(), 1)
    body = b"x" * (MAX_QUEUED_BYTES // 4)
    ex = Exchange(route, "GET", "/b", "", [], b"", "legacy", 200, [], body, 0.001, b"rid")
    for _ in range(6):
        shadower.submit(ex)
    await store.flush()
    assert (await store.stats())["b"].counters == {"sampled": 6, "dropped": 2}


async def test_gateway_made_error_is_not_shadowed(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A 502 the gateway made itself (primary down) is not copied: new gets nothing, nothing is compared."""
    from proxy.devstack.embedded import free_port

    _, new = backends
    dead = Backend("legacy", port=free_port())  # never started: connections are refused
    rig = await make_rig(routes_text(dead, new, USERS % "legacy", "aa_sample: 0"))
    assert (await rig.get("/users"))[0] == 502
    await rig.shadower.drain()
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("differed"), st.get("matched")) == (0, 0, 0)
    assert new.seen == []


async def test_primary_failure_counts_as_that_sides_error(backends: tuple[Backend, Backend]) -> None:
    """An exchange without an upstream response is the primary's error, not a difference; not replayed."""
    from proxy.server.exchange import Exchange
    from proxy.upstream.pool import UpstreamPool

    _, new = backends
    parsed = parse_routes(routes_text(backends[0], new, USERS % "legacy", "aa_sample: 0"), "t.yaml")
    pools = {name: UpstreamPool(spec) for name, spec in parsed.upstreams.items()}
    store = MemoryStore()
    shadower = Shadower(parsed.shadow_settings, pools, store)
    await shadower.start()
    try:
        route = parsed.routes[0]
        shadower.submit(Exchange(route, "GET", "/users", "", [], b"", "legacy", 502, [], None, 0.001, b"rid"))
        await asyncio.wait_for(shadower.drain(), 5)
        st = (await store.stats())["users"]
        assert (st.get("errors_control"), st.get("compared"), st.get("differed")) == (1, 0, 0)
        assert new.seen == []
    finally:
        await shadower.close(grace=0.5)
        for pool in pools.values():
            pool.close()


AUTO = (
    "  - {name: users, match: {path: /users}, target: auto, shadow: {sample: 1.0, writes: true},\n"
    '     rollout: {sticky: "header:X-User"}}\n'
)


async def test_auto_route_shadows_to_the_side_not_served(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """On a `target: auto` route the copy goes to the other side of the one the canary picked: served by
    new, legacy gets the copy; served by legacy, new does; both compared."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, AUTO, "aa_sample: 0"))
    rig.gateway.set_stages({"users": 10000})
    status, headers, _ = await rig.get("/users", headers={"X-User": "a"})
    assert status == 200 and headers["X-Strangler-Served-By"] == "new"
    await rig.shadower.drain()
    assert (len(new.seen), len(legacy.seen)) == (1, 1)
    assert "X-Forwarded-For" in new.seen[0]["headers"]  # the client's request went to new
    rig.gateway.set_stages({"users": 0})
    status, headers, _ = await rig.get("/users", headers={"X-User": "a"})
    assert status == 200 and headers["X-Strangler-Served-By"] == "legacy"
    await rig.shadower.drain()
    assert (len(new.seen), len(legacy.seen)) == (2, 2)
    st = (await rig.store.stats())["users"]
    assert (st.get("compared"), st.get("matched")) == (2, 2)


async def test_auto_route_write_is_dry_run_only_when_legacy_serves_it(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A write served by legacy is dry-run on new first; one served by new is never copied to legacy."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, AUTO, "aa_sample: 0"))
    assert (await rig.request("POST", "/users", data=b"{}", headers={"X-User": "a"}))[0] == 200
    await rig.shadower.drain()
    assert [r["method"] for r in legacy.seen] == ["POST"] and [r["method"] for r in new.seen] == ["POST"]
    assert dryrun.HEADER.lower() in {h.lower() for h in new.seen[0]["headers"]}
    rig.gateway.set_stages({"users": 10000})
    status, headers, _ = await rig.request("POST", "/users", data=b"{}", headers={"X-User": "a"})
    assert status == 200 and headers["X-Strangler-Served-By"] == "new"
    await rig.shadower.drain()
    assert len(legacy.seen) == 1 and len(new.seen) == 2  # no copy to legacy
    assert (await rig.store.stats())["users"].get("unavailable_write") == 1
