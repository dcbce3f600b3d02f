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
from aiohttp.typedefs import Middleware

from services import edge, health, metrics
from services.auth import routes as auth_routes
from services.cache import Cache
from services.context import BODY_LIMIT, CACHE, HASH_POOL, LOAD_USER, POOL, SETTINGS, STARTED
from services.db import ConnectionInit, close_pool, create_pool
from services.fairpool import FairPool
from services.http import Router, error_middleware, make_dispatch
from services.metrics import METRICS
from services.posts import routes as posts_routes
from services.settings import Settings
from services.stream import routes as stream_routes
from services.stream.hub import Hub
from services.users import repo as users_repo
from services.users import routes as users_routes
from services.wire import HANDLER_ARGS, drop_server_header, wire_middleware

ROUTES = edge.labelled(
    (*health.ROUTES, *auth_routes.ROUTES, *users_routes.ROUTES, *posts_routes.ROUTES, *stream_routes.ROUTES)
)


def _pool_ctx(init: ConnectionInit | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max, init)
        # Every request reaches the pool through the FIFO gate (see services/fairpool.py).
        fair = app[POOL] = FairPool(pool)
        app[METRICS].pool = lambda: (
            pool.get_size(),
            pool.get_size() - pool.get_idle_size(),
            fair.gate.waiting,
            pool.get_max_size(),
        )
        yield
        await close_pool(pool)

    return pool_ctx


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = metrics.CountingRedis(
        connection_pool=aioredis.ConnectionPool.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=10.0
        )
    )
    client.on_error = app[METRICS].redis_error
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
    stats = metrics.ServiceMetrics(health.VERSION)
    middlewares: list[Middleware] = [
        wire_middleware,  # the request head budget (431) before anything else, as Node's parser
        metrics.middleware(stats),
        edge.outer_middleware(settings),
        error_middleware,
        edge.preflight_middleware(settings),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=BODY_LIMIT, handler_args=HANDLER_ARGS)
    if settings.test_diff is None:
        app.on_response_prepare.append(drop_server_header)
    # else: the test-only mutant keeps aiohttp's Server header, which end-to-end tests use to tell which
    # backend answered a reply that has no user names in it (docs/API.md, Test-only switch).
    app[SETTINGS] = settings
    app[STARTED] = time.monotonic()
    app[LOAD_USER] = users_repo.get
    app[METRICS] = stats
    if settings.cors.enabled:
        app.on_response_prepare.append(edge.cors_on_prepare(settings))
    if settings.metrics_port is not None:
        app.cleanup_ctx.append(metrics.serve(stats, settings.host, settings.metrics_port))
    app.cleanup_ctx.append(_pool_ctx(db_init))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_hash_pool_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_end_streams)
    # [\s\S], not `.`: a path may hold a decoded newline (/users/1%0A is "user not found", not unroutable).
    app.router.add_route("*", r"/{tail:[\s\S]*}", make_dispatch(Router(ROUTES)))
    return app
