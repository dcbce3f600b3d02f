"""The autopilot in a serving process: apply the stages everyone agrees on; decide them when leader.

Every serving process (each replica, each worker) runs one :class:`Controller`:

- the *sync* loop, every ``sync_s`` (0.25 s): flushes the served-traffic counts (``proxy.rollout.served``),
  reads every route's state (one HGETALL) and hands the data path ``route -> basis points new serves`` for
  the auto routes when it changed, so all processes apply a decision within about a second;
- the *decide* loop, every ``decide_s`` (1 s): contends for the lease (``proxy.rollout.lease``); the
  holder reads each auto route's evidence and writes promotions and rollbacks (state + audit event in
  one script that checks the lease: only the leader's writes land), logs them and counts them.

A route never seen starts at stage 0; a changed plan is reconciled (``state.reconcile``); a route with
``target: legacy|new`` is not the autopilot's and is never touched. Redis failures are logged (once per
outage) and retried on the next tick; the data path keeps the last stages it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from proxy.autopilot.evidence import auto_routes, collect, plan_of
from proxy.rollout.decide import HOLD, PROMOTE, Decision, Evidence, decide
from proxy.rollout.lease import DEFAULT_TTL_S, Lease
from proxy.rollout.served import Fallbacks, ServedFlusher, ServedReader, Source, baseline
from proxy.rollout.state import NOT_LEADER, WRITTEN, Event, RouteState, commit, initial, keys, load, reconcile
from proxy.routing.table import RouteTable
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import DiffStore

__all__ = ["STAGE", "TRANSITIONS", "Apply", "Controller", "stages_of"]

log = logging.getLogger("strangler")

TRANSITIONS: Final = Counter(
    "strangler_rollout_transitions", "Rollout transitions written by the leader, by route and action.",
    ["route", "action"],
)  # fmt: skip
STAGE: Final = Gauge(
    "strangler_rollout_stage", "Percent of a route's requests new serves (the stage applied).", ["route"],
    multiprocess_mode="livemax",
)  # fmt: skip

# The data path's hook: route name -> basis points (0..10000) of requests new serves.
Apply = Callable[[dict[str, int]], None]


def stages_of(table: RouteTable, states: dict[str, RouteState]) -> dict[str, int]:
    """Basis points per auto route: its stored percent, 0 for a route never decided."""
    out = {}
    for route in auto_routes(table):
        state = states.get(route.name)
        out[route.name] = max(0, min(100, state.percent)) * 100 if state is not None else 0
    return out


def _event(message: str, level: int = logging.INFO, **fields: object) -> None:
    # proxy.ops.logs.event's line shape (this layer is below ops: the same logger, the same fields key).
    log.log(level, message, extra={"fields": fields})


class Controller:
    """One process's autopilot (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        table: Callable[[], RouteTable],
        apply: Apply | None,
        *,
        served: Source | None = None,
        bounds: tuple[float, ...] = (),
        fallbacks: Fallbacks | None = None,
        store: DiffStore | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        lease_clock: Callable[[], float] = time.monotonic,
        lease_ttl_s: float = DEFAULT_TTL_S,
        sync_s: float = 0.25,
        decide_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = keys(prefix)
        self.table = table
        self.apply = apply
        self.flusher = (
            ServedFlusher(redis, self.keys.served, served, bounds, fallbacks) if served is not None else None
        )
        self.reader = ServedReader(redis, self.keys.served)
        self.store = store if store is not None else RedisPgStore(redis, None, prefix)
        self.lease = Lease(redis, self.keys.leader, owner, lease_ttl_s, lease_clock)
        self.clock = clock
        self.sync_s = sync_s
        self.decide_s = decide_s
        self.applied: dict[str, int] | None = None
        self.last: dict[str, Decision] = {}  # the leader's latest decision per route
        self._failing: set[str] = set()

    @property
    def owner(self) -> str:
        """This process's leader id."""
        return self.lease.owner

    async def sync_once(self) -> dict[str, int]:
        """Flush served counts, read the states and apply the stages if they changed; the stages."""
        if self.flusher is not None:
            await self.flusher.flush(self.clock())
        stages = stages_of(self.table(), await load(self.redis, self.prefix))
        if stages != self.applied:
            if self.apply is not None:
                self.apply(dict(stages))
            for route, bps in stages.items():
                STAGE.labels(route).set(bps / 100)
            self.applied = stages
        return stages

    async def decide_once(self) -> list[Event]:
        """If this process holds the lease, decide every auto route; the transitions written."""
        if not await self.lease.tick():
            return []
        table = self.table()
        if not auto_routes(table):
            return []
        now = self.clock()
        states = await load(self.redis, self.prefix)
        written: list[Event] = []
        for route in auto_routes(table):  # first: a stored state, under the route's current plan
            plan = plan_of(route)
            state = states.get(route.name)
            if state is None:
                state = await self._write(route.name, None, initial(plan, now), None)
                if state is None:
                    return written
            fixed = reconcile(state, plan, now)
            if fixed is not None:
                new_state, why = fixed
                ev = Event(
                    route.name, state.percent, new_state.percent, "plan-changed", self.owner, why, {}, now
                )
                stored = await self._write(route.name, state, new_state, ev)
                if stored is None:
                    return written
                written.append(ev)
                state = stored
            states[route.name] = state
        evidence = await collect(self.store, self.reader, table, states, now)
        for route in auto_routes(table):
            plan, state = plan_of(route), states[route.name]
            ev_data = evidence.get(route.name) or Evidence()
            decision = decide(plan, state.stage, state.since, state.paused, ev_data, now)
            self.last[route.name] = decision
            if decision.action == HOLD:
                continue
            to_pct = plan.stages[decision.to_stage]
            why = "; ".join(decision.reasons) if decision.reasons else "gate held"
            base_at, base = await baseline(self.redis, self.keys.served, route.name, now)
            new_state = replace(
                state, stage=decision.to_stage, percent=to_pct, since=now, why=why, base_at=base_at, base=base
            )
            ev = Event(
                route.name, state.percent, to_pct, decision.action, self.owner, why, ev_data.as_json(), now
            )
            if await self._write(route.name, state, new_state, ev) is None:
                return written
            written.append(ev)
        return written

    async def _write(
        self, route: str, before: RouteState | None, state: RouteState, ev: Event | None
    ) -> RouteState | None:
        """Commit under the lease; log and count its event; the state as stored. None: the lease was
        lost or the route changed meanwhile (a person's command): stop this round, read again next."""
        done = await commit(self.redis, self.prefix, route, before, state, ev, self.owner)
        if done == NOT_LEADER:
            self.lease.held = False
        if done != WRITTEN:
            return None
        stored = replace(state, raw=state.to_json())
        if ev is None:
            return stored
        TRANSITIONS.labels(route, ev.action).inc()
        level = logging.WARNING if ev.action != PROMOTE else logging.INFO
        _event("rollout transition", level, route=route, action=ev.action, from_percent=ev.from_pct,
               to_percent=ev.to_pct, who=ev.who, why=ev.why, evidence=ev.evidence)  # fmt: skip
        return stored

    async def _loop(self, name: str, step: Callable[[], Awaitable[object]], every: float) -> None:
        while True:
            try:
                await step()
                if name in self._failing:
                    self._failing.discard(name)
                    _event(f"rollout {name} recovered")
            except Exception as exc:  # Redis down, or a bug: logged, and the loop keeps the data path fed
                if name not in self._failing:  # once per outage, not once per tick
                    self._failing.add(name)
                    _event(f"rollout {name} failed; retrying", logging.WARNING,
                           error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            await asyncio.sleep(every)

    async def run(self) -> None:
        """Run the sync and decide loops until cancelled, then give the lease up."""
        tasks = [
            asyncio.create_task(self._loop("sync", self.sync_once, self.sync_s), name="rollout-sync"),
            asyncio.create_task(self._loop("decide", self.decide_once, self.decide_s), name="rollout-decide"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(aioredis.RedisError, OSError):
                await self.lease.release()
