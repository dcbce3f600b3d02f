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
from services.edge import HANDLER_ARGS, drop_server_header, edge_middleware
from services.fairpool import FairPool
from services.http import Router, error_middleware, make_dispatch
from services.posts import routes as posts_routes
from services.settings import Settings
from services.users import routes as users_routes

ROUTES = (*health.ROUTES, *auth_routes.ROUTES, *users_routes.ROUTES, *posts_routes.ROUTES)


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


def create_app(settings: Settings, *, db_init: ConnectionInit | None = None) -> web.Application:
    """Build the service. `db_init` runs on each new database connection (tests count queries with it)."""
    app = web.Application(
        middlewares=[edge_middleware, error_middleware], client_max_size=BODY_LIMIT, handler_args=HANDLER_ARGS
    )
    if settings.test_diff is None:
        app.on_response_prepare.append(drop_server_header)
    # else: the test-only mutant keeps aiohttp's Server header, which end-to-end tests use to tell which
    # backend answered a reply that has no user names in it (docs/API.md, Test-only switch).
    app[SETTINGS] = settings
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_pool_ctx(db_init))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_hash_pool_ctx)
    # [\s\S], not `.`: a path may hold a decoded newline (/users/1%0A is "user not found", not unroutable).
    app.router.add_route("*", r"/{tail:[\s\S]*}", make_dispatch(Router(ROUTES)))
    return app
