"""Prometheus metrics of the new service, with the same names and labels as the legacy app's.

``/metrics`` is served on its own port (``METRICS_PORT``), never on the API port, so the gateway
cannot expose it. The hot path only bumps plain dicts (:meth:`ServiceMetrics.observe`); a collector
turns them into metric families at scrape time. The names (docs/API.md, Metrics):

- ``http_requests_total{route,method,status}`` and ``http_request_duration_seconds{route,method}``,
  ``route`` being the template (``/api/v1/users/{id}``) or ``<unmatched>``;
- ``db_pool_size``, ``db_pool_in_use``, ``db_pool_waiting``, ``db_pool_max`` (gauges);
- ``redis_errors_total``: Redis commands that failed (connection, timeout or error reply);
- ``service_info{service,version}`` = 1.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from services.edge import ROUTE

BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"
SERVICE = "new"

log = logging.getLogger("services.metrics")


class ServiceMetrics:
    """Counters kept in dicts: (route, method, status) -> count, (route, method) -> bucket counts + sum."""

    __slots__ = ("cells", "counts", "pool", "redis_errors", "version")

    def __init__(self, version: str) -> None:
        self.version = version
        self.counts: dict[tuple[str, str, str], int] = {}
        self.cells: dict[tuple[str, str], list[float]] = {}
        self.redis_errors = 0
        # () -> (size, in use, waiting, max); set once the pool exists.
        self.pool: Callable[[], tuple[int, int, int, int]] | None = None

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        key = (route, method, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        cell = self.cells.get((route, method))
        if cell is None:
            cell = self.cells[(route, method)] = [0.0] * (len(BUCKETS) + 2)
        cell[bisect.bisect_left(BUCKETS, seconds)] += 1  # le is inclusive
        cell[-1] += seconds

    def redis_error(self) -> None:
        """Count one failed Redis command."""
        self.redis_errors += 1

    def registry(self) -> CollectorRegistry:
        """A registry holding only these metrics (no python_* / process_* families: the legacy app
        exposes Node's instead, and the two services must list the same names)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


class _Collector(Collector):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        requests = CounterMetricFamily(
            "http_requests", "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )  # fmt: skip
        for (route, method, status), count in sorted(m.counts.items()):
            requests.add_metric([route, method, status], count)
        yield requests
        duration = HistogramMetricFamily(
            "http_request_duration_seconds", "Time to answer a request, by route template and method.",
            labels=["route", "method"],
        )  # fmt: skip
        for (route, method), cell in sorted(m.cells.items()):
            running, buckets = 0.0, list[tuple[str, float]]()
            for bound, seen in zip(BUCKETS, cell, strict=False):
                running += seen
                buckets.append((_bound(bound), running))
            buckets.append(("+Inf", running + cell[len(BUCKETS)]))
            duration.add_metric([route, method], buckets, cell[-1])
        yield duration
        size, in_use, waiting, maximum = m.pool() if m.pool is not None else (0, 0, 0, 0)
        for name, text, value in (
            ("db_pool_size", "Open database connections.", size),
            ("db_pool_in_use", "Database connections lent to a request.", in_use),
            ("db_pool_waiting", "Requests waiting for a database connection.", waiting),
            ("db_pool_max", "The most connections the pool may open.", maximum),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        errors = CounterMetricFamily("redis_errors", "Redis commands that failed.")
        errors.add_metric([], m.redis_errors)
        yield errors
        info = GaugeMetricFamily("service_info", "Which service this is.", labels=["service", "version"])
        info.add_metric([SERVICE, m.version], 1)
        yield info


def _bound(value: float) -> str:
    # prom-client prints bounds as JavaScript numbers: 1 and 10, not 1.0 and 10.0.
    return str(int(value)) if value.is_integer() else repr(value)


class CountingRedis(aioredis.Redis):
    """A Redis client that reports every failed command to ``on_error``."""

    on_error: Callable[[], None] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        except RedisError:
            if self.on_error is not None:
                self.on_error()
            raise


METRICS = web.AppKey("metrics", ServiceMetrics)


def middleware(metrics: ServiceMetrics) -> Middleware:
    """The outermost middleware: one observation per answered request."""
    clock = time.perf_counter

    @web.middleware
    async def observe(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = clock()
        response = await handler(request)
        info = request.get(ROUTE)
        metrics.observe(UNMATCHED if info is None else info.template, request.method, response.status,
                        clock() - started)  # fmt: skip
        return response

    return observe


def serve(metrics: ServiceMetrics, host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx serving ``GET /metrics`` on host:port (0: a free port, logged) beside the API."""

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    registry = metrics.registry()

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", scrape)
        runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1] if runner.addresses else port
            log.info("metrics listening", extra={"host": host, "metrics_port": bound})
            yield
        finally:
            await runner.cleanup()

    return ctx
