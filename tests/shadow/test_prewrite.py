"""Sampled writes are dry-run on new *before* legacy gets them (proxy/server/holding.py,
proxy/shadow/prewrite.py), through the real data path and real loopback backends."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import REGISTRY
from support.upstreams import RawClient
from support.waiting import eventually

from proxy.report.model import build_report
from proxy.report.text import render_terminal
from proxy.shadow import dryrun
from proxy.shadow.redis_pg import RedisPgStore

from .shadow_rig import Backend, RigFactory, routes_text

WRITE = (
    "  - {name: w, match: {methods: [POST, GET], path: /w}, target: legacy,"
    " shadow: {sample: 1.0, writes: true%s}}\n"
)


def _ordered(order: list[tuple[str, str, bool]], backend: Backend) -> None:
    """Make ``backend`` record (its name, method, dry run?) in the shared ``order`` on arrival."""

    async def handle(request: web.Request) -> web.StreamResponse:
        order.append((backend.name, request.method, dryrun.HEADER in request.headers))
        return web.json_response({"id": 1, "name": "Alice"})

    backend.handler = handle


def _waits() -> float:
    return REGISTRY.get_sample_value("strangler_shadow_prewrite_wait_seconds_count", {"route": "w"}) or 0.0


async def test_dry_run_reaches_new_before_legacy_gets_the_write(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """The signed dry run is answered by new before legacy receives the write; the pair is compared once,
    and the wait is in the histogram and the store."""
    legacy, new = backends
    order: list[tuple[str, str, bool]] = []
    _ordered(order, legacy)
    _ordered(order, new)
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"), secret=b"k3y")
    waits = _waits()
    status, _, body = await rig.request("POST", "/w?x=1", data=b'{"name":"a"}',
                                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and orjson.loads(body) == {"id": 1, "name": "Alice"}
    assert order == [("new", "POST", True), ("legacy", "POST", False)]
    signature = new.seen[0]["headers"][dryrun.HEADER]
    assert dryrun.verify(b"k3y", signature, "POST", "/w?x=1", b'{"name":"a"}')
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("sampled"), st.get("compared"), st.get("matched"), st.get("not_compared")) == (1, 1, 1, 0)
    assert len(new.seen) == 1  # no second dry run after the primary
    assert sum(st.latency["prewrite"].values()) == 1
    assert _waits() == waits + 1


async def test_judge_compares_the_state_the_primary_saw(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A register-like pair over one shared state: legacy creates (201, then 409 for the same name), new's
    dry run only checks. Dry-run after the write, new would say 409 to legacy's 201; before it, they agree;
    and a repeated name is a 409 on both sides."""
    legacy, new = backends
    taken: set[str] = set()

    async def register(request: web.Request) -> web.StreamResponse:
        name = (await request.json())["name"]
        if name in taken:
            return web.json_response({"error": "taken"}, status=409)
        if dryrun.HEADER not in request.headers:
            taken.add(name)
        return web.json_response({"name": name}, status=201)

    legacy.handler = new.handler = register
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"))
    for name, expected in (("ann", 201), ("bob", 201), ("ann", 409)):
        assert (await rig.request("POST", "/w", json={"name": name}))[0] == expected
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("compared"), st.get("matched"), st.get("differed")) == (3, 3, 0)
    assert taken == {"ann", "bob"}  # the dry runs created nothing


async def test_hanging_new_delays_the_write_by_at_most_the_timeout(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """With new hanging, legacy gets the write only once the deadline clock reaches the route's shadow
    timeout (not before it nears it), the write succeeds, and it is counted as not compared."""
    legacy, new = backends
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.wait_for(release.wait(), 60)
        return web.json_response({})

    new.handler = hang
    loop = asyncio.get_running_loop()
    ahead = [0.0]
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return loop.time() + ahead[0]

    rig = await make_rig(routes_text(legacy, new, WRITE % ", timeout: 30", "aa_sample: 0"),
                         deadline_clock=clock)  # fmt: skip
    try:
        write = asyncio.ensure_future(rig.request("POST", "/w", data=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)  # the dry run is out and hanging
        ahead[0] = 29.0  # well inside the timeout: the sweeps pass, the write stays held
        seen = reads[0]
        await eventually(lambda: reads[0] >= seen + 3, what="three sweeps on the moved clock")
        assert legacy.seen == [] and not write.done()
        ahead[0] = 30.0  # the route's shadow timeout: the dry run has failed by now
        status, _, _ = await asyncio.wait_for(write, 5)
        assert status == 200 and [r["method"] for r in legacy.seen] == ["POST"]
        await rig.shadower.drain()
        st = (await rig.store.stats())["w"]
        assert (st.get("not_compared"), st.get("not_compared_timeout"), st.get("compared")) == (1, 1, 0)
        assert st.get("errors_candidate") == 1
    finally:
        release.set()


async def test_new_refusing_connections_never_fails_the_write(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """New's port refuses the connection: the write is answered by legacy and counted as not compared."""
    legacy, new = backends
    await new.close()  # nothing listens on its port any more
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"))
    status, _, body = await rig.request("POST", "/w", data=b"{}")
    assert status == 200 and orjson.loads(body) == {"id": 1, "name": "Alice"}
    assert [r["method"] for r in legacy.seen] == ["POST"]
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("not_compared"), st.get("not_compared_error"), st.get("compared")) == (1, 1, 0)


async def test_write_over_the_body_cap_is_forwarded_untouched_and_counted(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A write whose body is over the shadow body cap is forwarded at once, whole, never dry-run."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0, body_cap: 100"))
    body = bytes(range(256)) * 4
    assert (await rig.request("POST", "/w", data=body))[0] == 200
    assert legacy.seen[0]["body"] == body and new.seen == []
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("not_compared"), st.get("not_compared_body"), st.get("compared")) == (1, 1, 0)


async def test_pipelined_write_then_read_answered_in_order(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A keep-alive client pipelining a sampled write and a GET gets both answers, in order; legacy gets
    the write after its dry run and the GET after the write."""
    legacy, new = backends
    order: list[tuple[str, str, bool]] = []
    _ordered(order, legacy)
    _ordered(order, new)
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"))
    client = await RawClient.open(rig.port)
    try:
        await client.send(
            b"POST /w HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
            b"GET /w?second=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        first, second = await client.response(), await client.response()
    finally:
        client.close()
    assert (first.status, second.status) == (200, 200)
    assert [r["path"] for r in legacy.seen] == ["/w", "/w?second=1"]
    assert order[:3] == [("new", "POST", True), ("legacy", "POST", False), ("legacy", "GET", False)]
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("compared"), st.get("matched")) == (2, 2)


async def test_closing_the_shadow_releases_a_held_write(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A write held for a hanging dry run goes on when the shadower closes (counted: closed)."""
    legacy, new = backends
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.wait_for(release.wait(), 60)
        return web.json_response({})

    new.handler = hang
    rig = await make_rig(routes_text(legacy, new, WRITE % ", timeout: 30", "aa_sample: 0"))
    try:
        write = asyncio.ensure_future(rig.request("POST", "/w", data=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)
        await rig.shadower.close(grace=0)
        assert (await asyncio.wait_for(write, 5))[0] == 200
        st: Any = (await rig.store.stats())["w"]
        assert (st.get("not_compared"), st.get("not_compared_closed")) == (1, 1)
    finally:
        release.set()


async def test_chunked_write_is_held_whole_and_dry_run_unchunked(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A chunked write arriving in pieces is dry-run with its whole body, then forwarded whole."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"))
    client = await RawClient.open(rig.port)
    try:
        head = b"POST /w HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        await client.send(head + b'6\r\n{"name\r\n')
        await eventually(lambda: rig.server.active_requests == 1, what="the write's head read")
        await client.send(b"6\r\n\":\"a\"}\r\n0\r\n\r\n")
        assert (await client.response()).status == 200
    finally:
        client.close()
    assert new.seen[0]["body"] == legacy.seen[0]["body"] == b'{"name":"a"}'


async def test_client_expecting_continue_is_not_held(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A client waiting for 100 Continue before its body gets it from legacy: the write is forwarded at
    once, without a dry run, and counted."""
    legacy, new = backends
    rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0"))
    client = await RawClient.open(rig.port)
    try:
        await client.send(b"POST /w HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert (await client.response()).status == 100
        await client.send(b"{}")
        assert (await client.response()).status == 200
    finally:
        client.close()
    assert new.seen == [] and legacy.seen[0]["body"] == b"{}"
    await rig.shadower.drain()
    st = (await rig.store.stats())["w"]
    assert (st.get("not_compared"), st.get("not_compared_expect")) == (1, 1)


async def test_write_wait_is_stored_in_redis_and_reported(
    make_rig: RigFactory, backends: tuple[Backend, Backend], redis_url: str, redis_prefix: str
) -> None:
    """Through the product's store: the waits read back from Redis, and the report prints them with the
    writes not compared and why."""
    legacy, new = backends
    store = RedisPgStore(aioredis.Redis.from_url(redis_url), None, redis_prefix)
    try:
        rig = await make_rig(routes_text(legacy, new, WRITE % "", "aa_sample: 0, body_cap: 100"), store=store)
        for body in (b"{}", b"{}", b"x" * 200):
            assert (await rig.request("POST", "/w", data=body))[0] == 200
        await rig.shadower.drain()
        stats = await store.stats()
        assert sum(stats["w"].latency["prewrite"].values()) == 2
        text = render_terminal(build_report(stats, rig.table))
        assert "writes waited for dry run: p50 " in text and "(2 writes)" in text
        assert "writes not compared: 1 (body 1)" in text
    finally:
        await store.aclose()
