"""A realistic migration written into the real Redis through the product's own writers: an hour of
comparisons (``RedisPgStore``, its match-rate buckets included), served traffic (``ServedFlusher``), auto
stages and their audit events (``proxy.rollout.state.commit``). Shared by the progress CLI and web tests.

The mix at ``now``: ``orders-export`` legacy (not shadowed); ``users-get`` shadowing, READY for 3 min;
``users-search`` shadowing, 40 of 100 comparisons; ``posts-list`` canary 10 % (for 5 min); ``users-list``
migrated 10 min ago (legacy served earlier in the hour); ``posts-get`` on 100 % for two hours (legacy no
longer needed); ``comments`` flipped to new 15 min ago and differing since (roll back); ``health`` on new
with a few fallbacks to legacy; the default route on legacy.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace

import redis.asyncio as aioredis

from proxy.report.model import gather
from proxy.rollout.served import ServedFlusher
from proxy.rollout.state import Event, RouteState, commit, keys, plan_digest
from proxy.routing.table import RouteTable, parse_routes
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import ANY_METHOD

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 100, match_threshold: 0.99, latency_ratio: 0, ready_min_s: 0, ready_min_count: 0}
    rollout:
      stages: [0, 10, 50, 100]
      gate: {min_s: 600, min_count: 500, p99_ratio: 0}
      rollback: {diff_rate: 0.02, p99_ratio: 0}
    routes:
      - {name: orders-export, match: {methods: [GET], path: /orders/export}, target: legacy}
      - {name: users-get, match: {methods: [GET], path: "/users/{id}"}, target: legacy, shadow: {sample: 1.0}}
      - name: users-search
        match: {methods: [GET], path: /users/search}
        target: legacy
        shadow: {sample: 0.1}
      - {name: posts-list, match: {methods: [GET], path: /posts}, target: auto, shadow: {sample: 1.0}}
      - {name: users-list, match: {methods: [GET], path: /users}, target: auto, shadow: {sample: 1.0}}
      - {name: posts-get, match: {methods: [GET], path: "/posts/{id}"}, target: auto, shadow: {sample: 1.0}}
      - {name: comments, match: {methods: [GET], path: /comments}, target: new, shadow: {sample: 1.0}}
      - {name: health, match: {methods: [GET], path: /health}, target: new}
""")
TABLE = parse_routes(ROUTES, "routes.yaml")
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1)
MIN = 60.0
# Requests per minute of each route (the default route's name is "default").
RATE = {"orders-export": 30, "users-get": 120, "users-search": 40, "posts-list": 200, "users-list": 80,
        "posts-get": 150, "comments": 60, "health": 12, "default": 20}  # fmt: skip
FLIP_S = 15 * MIN  # comments went to new this long before now


def percent(route: str, ago: float) -> int:
    """The share (percent) new served ``ago`` seconds before now."""
    if route in ("posts-get", "health"):
        return 100
    if route == "comments":
        return 100 if ago < FLIP_S else 0
    if route == "posts-list":  # promoted 40 min ago, rolled back at 32, promoted again 5 min ago
        return 10 if ago < 5 * MIN or 32 * MIN <= ago < 40 * MIN else 0
    if route == "users-list":
        return 100 if ago < 10 * MIN else 50 if ago < 25 * MIN else 10 if ago < 50 * MIN else 0
    return 0


class _Served:
    """One gateway process's request counts, flushed into the served buckets like the gateway's."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.cells: dict[tuple[str, str], list[float]] = {}
        self.flusher = ServedFlusher(redis, keys(prefix).served, lambda: (self.counts, self.cells), BOUNDS)

    def observe(self, route: str, side: str, n: int, status: int = 200) -> None:
        if n <= 0:
            return
        self.counts[(route, side, status)] = self.counts.get((route, side, status), 0) + n
        cell = self.cells.setdefault((route, side), [0.0] * (len(BOUNDS) + 2))
        cell[1] += n
        cell[-1] += 0.008 * n


async def seed(redis_url: str, prefix: str, now: float) -> RouteTable:
    """Write the migration described in the module docstring, as it stands at ``now``; the table."""
    redis = aioredis.Redis.from_url(redis_url)
    clock = [now - 2 * 3600]
    store = RedisPgStore(redis, None, prefix, wall=lambda: clock[0])
    before_flip = replace(TABLE.routes[[r.name for r in TABLE.routes].index("comments")], target="legacy")
    routes = {r.name: r for r in TABLE.routes}
    served = _Served(redis, prefix)
    try:
        for minute in range(120, 0, -1):  # two hours, a minute at a time, oldest first
            ago = minute * MIN - 5
            clock[0] = now - ago
            for name, rate in RATE.items():
                new = round(rate * percent(name, ago) / 100)
                served.observe(name, "new", new)
                served.observe(name, "legacy", rate - new)
            if minute in (7, 31):
                served.observe("health", "legacy", 2)  # fallbacks (connect errors of new)
            if minute > 60:
                await served.flusher.flush(clock[0])
                continue  # comparisons: the last hour only
            for name, per_min in (("users-get", 12), ("posts-list", 10), ("users-list", 8), ("posts-get", 6)):
                key = store.key(routes[name], "GET")
                for _ in range(per_min):
                    store.matched(key, 0.004 + 0.001 * (minute % 3), 0.006 + 0.001 * (minute % 4))
            if minute <= 4:  # users-search: 40 comparisons in the last 4 minutes
                key = store.key(routes["users-search"], "GET")
                for _ in range(10):
                    store.matched(key, 0.012, 0.015)
            comments = routes["comments"] if ago < FLIP_S else before_flip
            key = store.key(comments, "GET")
            differing = 1 if ago < FLIP_S and minute % 2 == 0 else 0
            for _ in range(12 - differing):
                store.matched(key, 0.005, 0.007)
            for _ in range(2):  # A/A pairs: what differs between two calls of one side (none here)
                store.aa_pair(key, ())
            for _ in range(differing):
                store.count(key, "compared")
                store.differed(key, "$.author.name", ("$.author.name",))
                store.count(key, "differed")
            if minute in (7, 31):
                store.count(store.key(routes["health"], ANY_METHOD), "fallback_connect", 2)
            await store.flush()
            await served.flusher.flush(clock[0])
        clock[0] = now
        await gather(store, TABLE, now=now - 3 * MIN)  # users-get became READY 3 minutes ago
        await _stages(redis, prefix, now)
    finally:
        await redis.aclose()
    return TABLE


async def _stages(redis: aioredis.Redis, prefix: str, now: float) -> None:
    """The auto routes' stages and the audit events that led there."""
    plan = TABLE.routes[[r.name for r in TABLE.routes].index("posts-list")].rollout
    assert plan is not None
    digest = plan_digest(plan)
    history = [  # (route, minutes ago, from, to, action, who, why)
        ("posts-get", 180, 0, 10, "promote", "gw-1:4121:a3f0", "gate held"),
        ("posts-get", 150, 10, 50, "promote", "gw-1:4121:a3f0", "gate held"),
        ("posts-get", 120, 50, 100, "promote", "gw-2:388:9c1e", "gate held"),
        ("users-list", 50, 0, 10, "promote", "gw-2:388:9c1e", "gate held"),
        ("posts-list", 40, 0, 10, "promote", "gw-2:388:9c1e", "gate held"),
        ("posts-list", 32, 10, 0, "rollback", "gw-2:388:9c1e", "new 5xx 6.2% > 5.0% (rollback.error_rate)"),
        ("users-list", 25, 10, 50, "manual-promote", "cli:ana", "promoted by hand (cli:ana): the gate held"),
        ("users-list", 10, 50, 100, "promote", "gw-2:388:9c1e", "gate held"),
        ("posts-list", 5, 0, 10, "promote", "gw-1:4121:a3f0", "gate held"),
    ]
    states: dict[str, RouteState] = {}
    for route, minutes, frm, to, action, who, why in history:
        at = now - minutes * MIN
        stage = plan.stages.index(to)
        state = RouteState(stage, to, False, at, why, digest)
        before = states.get(route)
        event = Event(route, frm, to, action, who, why, {"verdict": "READY"}, at)
        assert await commit(redis, prefix, route, before, state, event) == 1
        states[route] = replace(state, raw=state.to_json())
