"""Shadowed routes answering far more than ``body_cap``: the shadow keeps at most the cap of each body.

Bodies are streamed by loopback backends through a real gateway. The memory bound is a size assertion
(tracemalloc's peak of Python allocations in this process: gateway, backends and client together),
not a timing one. The comparisons must still count, by hash.
"""

from __future__ import annotations

import tracemalloc

import aiohttp
from aiohttp import web

from .shadow_rig import Backend, Handler, RigFactory, routes_text

CHUNK = b"a" * 65536
BODY_MIB = 64
BODY = BODY_MIB << 20
CAP = 1 << 20


def streaming(tail: bytes) -> Handler:
    """A handler streaming BODY_MIB MiB of ``a`` in 64 KiB chunks, the last ``len(tail)`` bytes ``tail``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BODY
        await resp.prepare(request)
        for _ in range(BODY // len(CHUNK) - 1):
            await resp.write(CHUNK)
        await resp.write(CHUNK[: len(CHUNK) - len(tail)] + tail)
        return resp

    return handle


async def _read_all(port: int, path: str) -> int:
    # The client reads and drops the body, so it holds no copy of its own.
    size = 0
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
    return size


async def test_huge_bodies_are_kept_to_the_cap_and_compared_by_hash(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """64 MiB answers on a shadowed route (body_cap 1 MiB): peak memory stays far below the body size,
    in the buffered calls (the primary too large to tee, fetched again) and the pipelined ones (the
    primary small, the other side huge); equal bodies match and differing ones differ, by hash."""
    legacy, new = backends
    legacy_big, new_big, new_other = streaming(b""), streaming(b""), streaming(b"zz")

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        if request.path == "/small":
            return web.Response(body=b"small", content_type="application/octet-stream")
        return await legacy_big(request)

    async def new_h(request: web.Request) -> web.StreamResponse:
        return await (new_other if request.query.get("differ") else new_big)(request)

    legacy.handler, new.handler = legacy_h, new_h
    routes = (
        "  - {name: big, match: {methods: [GET], path: /big}, target: legacy, shadow: {sample: 1}}\n"
        "  - {name: small, match: {methods: [GET], path: /small}, target: legacy, shadow: {sample: 1}}\n"
    )
    rig = await make_rig(routes_text(legacy, new, routes, f"aa_sample: 0, body_cap: {CAP}, timeout: 60"))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert await _read_all(rig.port, "/big") == BODY  # both 64 MiB, equal: buffered calls, by hash
        assert await _read_all(rig.port, "/big?differ=1") == BODY  # the last bytes differ
        assert await _read_all(rig.port, "/small") == 5  # pipelined call to new answering 64 MiB
        await rig.shadower.drain()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Buffering one shadow body alone would take BODY bytes (and joining it twice that).
    assert peak < BODY // 8, f"peak Python memory {peak >> 20} MiB while shadowing {BODY_MIB} MiB bodies"
    stats = await rig.store.stats()
    assert stats["big"].get("matched") == 1
    assert stats["big"].get("differed") == 1 and stats["big"].paths == {"body": 1}
    assert stats["small"].get("differed") == 1 and "body" in stats["small"].paths
