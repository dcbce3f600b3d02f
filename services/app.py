"""The new service's application factory: the only place that knows which resources exist.

Each long-lived resource (asyncpg pool, Redis client, hashing thread pool) is opened and closed by one
``cleanup_ctx`` generator and stored under a typed ``web.AppKey`` (see services/context.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio as aioredis
from aiohttp import web

from services import health
from services.auth import routes as auth_routes
from services.cache import Cache
from services.context import BODY_LIMIT, CACHE, HASH_POOL, POOL, SETTINGS, STARTED
from services.db import ConnectionInit, close_pool, create_pool
from services.fairpool import FairPool
from services.http import Router, error_middleware, make_dispatch
from services.posts import routes as posts_routes
from services.settings import Settings
from services.stream import routes as stream_routes
from services.stream.hub import Hub
from services.users import routes as users_routes

ROUTES = (
    *health.ROUTES, *auth_routes.ROUTES, *users_routes.ROUTES, *posts_routes.ROUTES, *stream_routes.ROUTES
)


def _pool_ctx(init: ConnectionInit | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max, init)
        # Every request reaches the pool through the FIFO gate (see services/fairpool.py).
        app[POOL] = FairPool(pool)
        yield
        await close_pool(pool)

    return pool_ctx


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=10.0)
    app[CACHE] = Cache(client, settings.redis_prefix)
    yield
    await client.aclose()


async def _hash_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    # argon2 and bcrypt release the GIL, so one thread per core hashes in parallel with the loop.
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="hash")
    app[HASH_POOL] = pool
    yield
    pool.shutdown(wait=True, cancel_futures=True)


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    hub = Hub(settings.redis_url, settings.redis_prefix, settings.stream_history_max)
    app[stream_routes.HUB] = hub
    hub.start()
    yield
    await hub.close()


async def _end_streams(app: web.Application) -> None:
    # on_shutdown runs before the server waits for its handlers: open streams and sockets end now.
    await app[stream_routes.HUB].close()


def create_app(settings: Settings, *, db_init: ConnectionInit | None = None) -> web.Application:
    """Build the service. `db_init` runs on each new database connection (tests count queries with it)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=BODY_LIMIT)
    app[SETTINGS] = settings
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_pool_ctx(db_init))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_hash_pool_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_end_streams)
    app.router.add_route("*", "/{tail:.*}", make_dispatch(Router(ROUTES)))
    return app
