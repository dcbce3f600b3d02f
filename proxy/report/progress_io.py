"""Read the progress view's inputs from Redis and build it (``proxy.report.progress`` is the pure half).

One HGETALL of the rollout states, one XREVRANGE of the last transitions, and two pipelines of bucket
hashes: the served-traffic buckets (``proxy.rollout.served``) from the window's start, or from the oldest
auto stage's start when that is earlier (its evidence counts since then; at most a day), and the
match-rate buckets (``proxy.shadow.redis_counters``, ``series:<t>``) of the window.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from proxy.report.model import Report
from proxy.report.progress import TRANSITIONS, Progress, Transition, build_progress
from proxy.rollout.served import TTL_S, evidence_start
from proxy.rollout.state import events, keys, load
from proxy.routing.model import AUTO
from proxy.routing.table import RouteTable
from proxy.shadow.redis_counters import read_buckets, series_prefix

__all__ = ["JOURNEY", "read_journey", "read_progress"]

JOURNEY = 200  # transitions of one route shown on its page, at most


async def read_progress(
    redis: aioredis.Redis, prefix: str, table: RouteTable | None, report: Report, window_s: float,
    now: float | None = None, cache: dict[tuple[str, int], dict[str, int]] | None = None,
) -> Progress:  # fmt: skip
    """The progress overview of ``report`` over the last ``window_s`` seconds (``cache``: complete buckets
    already read, kept by a caller that reads again and again; see ``read_buckets``)."""
    now = report.generated_at if now is None else now
    states = await load(redis, prefix)
    recent = await events(redis, prefix, count=TRANSITIONS)
    auto = {r.name for r in table.routes if r.target == AUTO} if table is not None else set()
    stages = (evidence_start(s.since, now) for name, s in states.items() if name in auto and s.since > 0)
    since = min([now - window_s, *stages])
    served = await read_buckets(redis, keys(prefix).served, since, now, ttl=TTL_S, cache=cache)
    match = await read_buckets(redis, series_prefix(prefix), now - window_s, now, cache=cache)
    return build_progress(table, report, states, recent, served, match, window_s, now)


async def read_journey(redis: aioredis.Redis, prefix: str, route: str) -> list[Transition]:
    """Every transition of ``route`` still in the audit stream (the newest ``JOURNEY``), oldest first: its
    way from legacy to new, with each rollback, pause and promotion by hand."""
    rows = await events(redis, prefix, route=route, count=JOURNEY)
    return [Transition(e.at, e.route, e.from_pct, e.to_pct, e.action, e.who, e.why) for e in reversed(rows)]
