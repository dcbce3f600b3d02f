"""What the rollout tests share: a routes table with auto routes (built by hand until routes.yaml parses
``target: auto``), comparisons recorded into the real Redis store, and served traffic written the way the
gateway's flusher writes it."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import redis.asyncio as aioredis

from proxy.rollout.served import ServedFlusher
from proxy.rollout.state import keys
from proxy.routing.model import AUTO, Gate, RollbackTriggers, RolloutPlan, Route
from proxy.routing.table import RouteTable, parse_routes
from proxy.shadow.redis_pg import RedisPgStore

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 10, match_threshold: 0.95, latency_ratio: 0, ready_min_s: 0, ready_min_count: 0}
    routes:
      - name: users
        match: {methods: [GET], path: "/users/{id}"}
        target: legacy
        shadow: {sample: 1.0}
      - name: posts
        match: {methods: [GET], path: "/posts/{id}"}
        target: legacy
        shadow: {sample: 1.0}
      - name: health
        match: {methods: [GET], path: "/health"}
        target: new
""")

PLAN = RolloutPlan(
    stages=(0, 10, 100),
    gate=Gate(min_s=30.0, min_count=10, error_margin=0.01, p99_ratio=0),
    rollback=RollbackTriggers(
        error_rate=0.05, connect_error_rate=0.05, p99_ratio=0, diff_rate=0.2, min_count=10
    ),
)
BOUNDS = (0.01, 0.1, 1.0)


def table(plans: dict[str, RolloutPlan] | None = None) -> RouteTable:
    """The routes with ``users`` and ``posts`` on ``target: auto`` (plans by name; default ``PLAN``)."""
    plans = plans if plans is not None else {"users": PLAN, "posts": PLAN}
    base = parse_routes(ROUTES, "routes.yaml")
    routes = tuple(
        replace(r, target=AUTO, rollout=plans[r.name]) if r.name in plans else r for r in base.routes
    )
    return replace(base, routes=routes, _compiled=None)


def route(t: RouteTable, name: str) -> Route:
    """The named route of ``t``."""
    return next(r for r in t.routes if r.name == name)


async def compare(redis_url: str, prefix: str, r: Route, matched: int, differed: int = 0) -> None:
    """Record shadow comparisons of ``r`` the way a gateway does (Redis counters of its current epoch)."""
    store = await RedisPgStore.connect(redis_url, None, prefix)
    key = store.key(r, "GET")
    for _ in range(matched):
        store.matched(key, 0.001, 0.001)
    for _ in range(differed):
        store.count(key, "compared")
        store.differed(key, "$.name", ("$.name",))
        store.count(key, "differed")
    await store.aclose()


class Served:
    """One process's request observer counts, flushed into Redis like the gateway's."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.cells: dict[tuple[str, str], list[float]] = {}
        self.flusher = ServedFlusher(redis, keys(prefix).served, lambda: (self.counts, self.cells), BOUNDS)

    def observe(self, route: str, side: str, status: int, seconds: float = 0.005, n: int = 1) -> None:
        """``n`` requests of ``route`` served by ``side``."""
        self.counts[(route, side, status)] = self.counts.get((route, side, status), 0) + n
        cell = self.cells.setdefault((route, side), [0.0] * (len(BOUNDS) + 2))
        index = next((i for i, b in enumerate(BOUNDS) if seconds <= b), len(BOUNDS))
        cell[index] += n
        cell[-1] += seconds * n

    async def flush(self, now: float) -> None:
        """Write what was observed since the last flush into the bucket of ``now``."""
        await self.flusher.flush(now)
