"""Helpers of the shadow tests: loopback legacy/new backends and a gateway with a real Shadower.

A module of its own (not conftest.py) so test modules can import it by a name no other directory uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support.memstore import MemoryStore

from proxy.routing.table import RouteTable, parse_routes
from proxy.server.gateway import Gateway
from proxy.server.listener import GatewayServer, start_server
from proxy.shadow.admission import Shadower
from proxy.shadow.store import DiffStore
from proxy.upstream.pool import UpstreamPool

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(scope="module")
def shadow_db(make_database: Any) -> str:
    """A migrated database for this module (a sync fixture: make_database runs its own event loop)."""
    url: str = make_database()
    return url


async def _default(request: web.Request) -> web.StreamResponse:
    return web.json_response({"id": 1, "name": "Alice"})


@dataclass
class Backend:
    """A loopback HTTP backend whose handler a test can swap; it records every request it gets."""

    name: str
    handler: Handler = _default
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> Backend:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append({"method": request.method, "path": request.path_qs,
                              "headers": dict(request.headers), "body": body})  # fmt: skip
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Backend, Backend]]:
    """(legacy, new) loopback backends answering {"id":1,"name":"Alice"} until told otherwise."""
    legacy, new = await Backend("legacy").start(), await Backend("new").start()
    yield legacy, new
    await legacy.close()
    await new.close()


def routes_text(legacy: Backend, new: Backend, routes: str, shadow: str = "") -> str:
    """A routes file on the two backends with the given ``routes:`` entries and global ``shadow:`` keys."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "http://127.0.0.1:{legacy.port}"}}\n'
        f'  new: {{url: "http://127.0.0.1:{new.port}"}}\n'
        "default: legacy\n" + (f"shadow: {{{shadow}}}\n" if shadow else "") + "routes:\n" + routes
    )


@dataclass
class Rig:
    """A running gateway with a Shadower: its port, the shadower, the store and the table."""

    port: int
    shadower: Shadower
    store: DiffStore
    table: RouteTable
    server: GatewayServer
    gateway: Gateway

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, **kw)

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(method, f"http://127.0.0.1:{self.port}{path}", **kw) as resp:
                return resp.status, dict(resp.headers), await resp.read()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    """Start a gateway + Shadower from routes text (store: in-memory unless given); stopped at the end.

    ``clock`` replaces the Shadower's time.monotonic (A/A and re-read rates, noise refresh, sample
    interval), ``reread_rate`` the race re-reads a second per route (0: none), and
    ``deadline_clock`` the loop clock its sweep compares the calls' deadlines with.
    """
    rigs: list[Rig] = []

    async def make(text: str, store: DiffStore | None = None, secret: bytes | None = b"dry-secret",
                   rand: Callable[[], float] | None = None, aa_rate: float | None = None,
                   reread_rate: float | None = None, clock: Callable[[], float] | None = None,
                   deadline_clock: Callable[[], float] | None = None) -> Rig:  # fmt: skip
        table = parse_routes(text, "shadow-test.yaml")
        store = store if store is not None else MemoryStore()
        pools = {name: UpstreamPool(spec) for name, spec in table.upstreams.items()}
        kwargs: dict[str, Any] = {"secret": secret, "flush_interval": 0.05, "own_pools": True}
        if rand is not None:
            kwargs["rand"] = rand
        if aa_rate is not None:
            kwargs["aa_rate"] = aa_rate
        if reread_rate is not None:
            kwargs["reread_rate"] = reread_rate
        if clock is not None:
            kwargs["clock"] = clock
        if deadline_clock is not None:
            kwargs["deadline_clock"] = deadline_clock
        shadower = Shadower(table.shadow_settings, pools, store, **kwargs)
        await shadower.start()
        gateway = Gateway(table, shadow=shadower)
        server = await start_server(gateway)
        rig = Rig(server.port, shadower, store, table, server, gateway)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.server.close()
        await rig.shadower.close(grace=0.5)
        for pool in rig.shadower.pools.values():
            if isinstance(pool, UpstreamPool):
                pool.close()
        rig.gateway.close()
    await asyncio.sleep(0)
