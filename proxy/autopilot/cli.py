"""``strangler rollout status [ROUTE] | pause | resume | promote [--force] | rollback ROUTE``: the autopilot
for people, against the same Redis and with the same guards as the leader.

A promotion by hand is judged on the evidence the leader would see (``proxy.autopilot.evidence``): it is
refused with what blocks it, unless ``--force``, which promotes anyway and says so (stderr and the audit
event). Every command is one audit event, ``who`` being ``cli:<user>``. A write is a compare-and-set on the
route's state: if the leader moved the route meanwhile, the command says so and changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis

from proxy.autopilot.evidence import auto_routes, collect, plan_of
from proxy.report.progress import age
from proxy.rollout.decide import Decision, Evidence, blocking, decide
from proxy.rollout.served import ServedReader, baseline
from proxy.rollout.state import WRITTEN, Event, RouteState, commit, events, initial, keys, load, reconcile
from proxy.routing.model import AUTO, Route
from proxy.routing.table import RoutesError, RouteTable, load_routes
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import DEFAULT_PREFIX

__all__ = ["main"]

_ACTIONS = ("status", "pause", "resume", "promote", "rollback")


class CommandError(Exception):
    """A command refused or failed; the message says why and what to do (exit 1 or 2)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strangler rollout", description="Show and steer the migration autopilot."
    )
    p.add_argument("action", choices=_ACTIONS, help="status, pause, resume, promote or rollback")
    p.add_argument("route", nargs="?", help="the route (required except for status)")
    p.add_argument("--routes", default="routes.yaml", help="routes file (default routes.yaml)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="Redis URL (env REDIS_URL)")
    p.add_argument(
        "--prefix",
        default=os.environ.get("STRANGLER_SHADOW_PREFIX", DEFAULT_PREFIX),
        help=f"Redis key prefix (env STRANGLER_SHADOW_PREFIX, default {DEFAULT_PREFIX})",
    )
    p.add_argument("--json", action="store_true", help="status: one JSON document")
    p.add_argument("--force", action="store_true", help="promote: even when the gate is not met (warns)")
    return p


@dataclass
class _Ctx:
    redis: aioredis.Redis
    prefix: str
    table: RouteTable
    who: str
    now: float


def _route(ctx: _Ctx, name: str) -> Route:
    route = next((r for r in ctx.table.routes if r.name == name), None)
    if route is None:
        raise CommandError(f"no route named {name!r} in {ctx.table.source or 'the routes file'}", 2)
    if route.target != AUTO:
        raise CommandError(
            f"route {name} has target: {route.target} set by hand, which overrides any plan; the autopilot "
            f"does not move it. Set target: auto in {ctx.table.source or 'routes.yaml'} to hand it over."
        )
    return route


async def _evidence(ctx: _Ctx, states: dict[str, RouteState]) -> dict[str, Evidence]:
    reader = ServedReader(ctx.redis, keys(ctx.prefix).served)
    return await collect(RedisPgStore(ctx.redis, None, ctx.prefix), reader, ctx.table, states, ctx.now)


def _current(ctx: _Ctx, route: Route, states: dict[str, RouteState]) -> RouteState:
    """The route's state as the leader would see it (never seen: stage 0; plan changed: reconciled)."""
    plan = plan_of(route)
    state = states.get(route.name) or initial(plan, ctx.now)
    fixed = reconcile(state, plan, ctx.now)
    return replace(fixed[0], raw=state.raw) if fixed is not None else state


async def _change(ctx: _Ctx, name: str, action: str, force: bool, err: TextIO) -> str:
    route = _route(ctx, name)
    plan = plan_of(route)
    states = await load(ctx.redis, ctx.prefix)
    before = states.get(name)
    state = _current(ctx, route, states)
    evidence: dict[str, Any] = {}
    why = f"promoted by hand ({ctx.who}): the gate held"
    if action == "pause":
        if state.paused:
            return f"route {name} is already paused at {state.percent}%"
        why = f"paused by hand ({ctx.who})"
        new = replace(state, paused=True, why=why)
    elif action == "resume":
        if not state.paused:
            return f"route {name} is not paused (at {state.percent}%)"
        why = f"resumed by hand ({ctx.who})"
        new = replace(state, paused=False, why=why)
    elif action == "rollback":
        why = f"rolled back by hand ({ctx.who})"
        base_at, base = await baseline(ctx.redis, keys(ctx.prefix).served, name, ctx.now)
        new = replace(
            state, stage=0, percent=plan.stages[0], since=ctx.now, why=why, base_at=base_at, base=base
        )
        action = "manual-rollback"
    else:
        if state.stage >= len(plan.stages) - 1:
            raise CommandError(f"route {name} is at its last stage ({state.percent}%): nothing to promote to")
        ev = (await _evidence(ctx, {**states, name: state})).get(name) or Evidence()
        evidence = ev.as_json()
        blocks = blocking(plan, state.stage, state.since, ev, ctx.now)
        if blocks and not force:
            raise CommandError(
                f"route {name}: the gate for {plan.stages[state.stage + 1]}% is not met:\n  - "
                + "\n  - ".join(blocks)
                + "\nWait for it, or promote anyway with --force."
            )
        if blocks:
            err.write(f"strangler rollout: warning: promoting {name} although the gate is not met: "
                      f"{'; '.join(blocks)}\n")  # fmt: skip
            why = f"forced by hand ({ctx.who}) although: {'; '.join(blocks)}"
        nxt = state.stage + 1
        base_at, base = await baseline(ctx.redis, keys(ctx.prefix).served, name, ctx.now)
        new = replace(
            state, stage=nxt, percent=plan.stages[nxt], since=ctx.now, why=why, base_at=base_at, base=base
        )
        action = "manual-promote"
    event = Event(name, state.percent, new.percent, action, ctx.who, why, evidence, ctx.now)
    done = await commit(ctx.redis, ctx.prefix, name, before, new, event)
    if done != WRITTEN:
        raise CommandError(f"route {name} changed while this command ran (the leader moved it); run it again")
    return f"route {name}: {action} {state.percent}% -> {new.percent}%{' (paused)' if new.paused else ''}"


async def _status(ctx: _Ctx, only: str | None) -> dict[str, Any]:
    states = await load(ctx.redis, ctx.prefix)
    routes = sorted(ctx.table.routes, key=lambda r: r.line)
    if only is not None:
        routes = [r for r in routes if r.name == only]
        if not routes:
            raise CommandError(f"no route named {only!r} in {ctx.table.source or 'the routes file'}", 2)
    current = {r.name: _current(ctx, r, states) for r in auto_routes(ctx.table)}
    evidence = await _evidence(ctx, current) if any(r.target == AUTO for r in routes) else {}
    recent = await events(ctx.redis, ctx.prefix, only, count=200 if only is None else 1)
    leader = await ctx.redis.get(keys(ctx.prefix).leader)
    rows = []
    for route in routes:
        last = next((e for e in recent if e.route == route.name), None)
        row: dict[str, Any] = {"route": route.name, "mode": "auto" if route.target == AUTO else "manual"}
        if route.target != AUTO:
            row.update(target=route.target, percent=100 if route.target == "new" else 0)
        else:
            plan, state = plan_of(route), current[route.name]
            ev = evidence.get(route.name) or Evidence()
            decision: Decision = decide(plan, state.stage, state.since, state.paused, ev, ctx.now)
            row.update(
                stage=state.stage, stages=list(plan.stages), percent=state.percent, since=state.since,
                paused=state.paused, why=state.why, next=decision.action, blocks=list(decision.reasons),
                stored=route.name in states,
            )  # fmt: skip
        row["last_event"] = None if last is None else {
            "action": last.action, "from": last.from_pct, "to": last.to_pct, "who": last.who, "why": last.why,
            "at": last.at, "evidence": last.evidence,
        }  # fmt: skip
        rows.append(row)
    return {"generated_at": ctx.now, "leader": leader.decode() if isinstance(leader, bytes) else leader,
            "routes": rows}  # fmt: skip


def _render(doc: dict[str, Any], now: float) -> str:
    lines = [f"leader: {doc['leader'] or 'none (no gateway is deciding)'}"]
    for row in doc["routes"]:
        if row["mode"] == "manual":
            lines.append(f"{row['route']}: manual (target: {row['target']}), {row['percent']}% on new")
        else:
            stage = f"{row['percent']}% (stage {row['stage']} of {row['stages']})"
            paused = ", PAUSED" if row["paused"] else ""
            since = age(max(0.0, now - row["since"]))
            lines.append(f"{row['route']}: {stage}{paused}, since {since} ago ({row['why']})")
            if row["next"] == "hold":
                lines += [f"    blocks: {b}" for b in row["blocks"]]
            else:
                lines.append(f"    next: {row['next']} ({'; '.join(row['blocks']) or 'gate held'})")
        last = row["last_event"]
        if last is not None:
            lines.append(f"    last: {last['action']} {last['from']}% -> {last['to']}% by {last['who']}, "
                         f"{age(max(0.0, now - last['at']))} ago: {last['why']}")  # fmt: skip
    return "\n".join(lines) + "\n"


async def _run(args: argparse.Namespace, table: RouteTable, out: TextIO, err: TextIO) -> int:
    redis = aioredis.Redis.from_url(args.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        ctx = _Ctx(redis, args.prefix, table, f"cli:{getpass.getuser()}", time.time())
        if args.action == "status":
            doc = await _status(ctx, args.route)
            text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n" if args.json else None
            out.write(text if text is not None else _render(doc, ctx.now))
            return 0
        out.write(await _change(ctx, args.route, args.action, args.force, err) + "\n")
        return 0
    finally:
        await redis.aclose()


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
    table: RouteTable | None = None,
) -> int:  # fmt: skip
    """``strangler rollout``: 0 done, 1 refused (the reason printed), 2 bad input or unreachable stores.
    ``table``: the routes already loaded (instead of ``--routes``)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if args.action != "status" and not args.route:
        err.write(
            f"strangler rollout {args.action}: name the route (strangler rollout {args.action} ROUTE)\n"
        )
        return 2
    if not args.redis_url:
        err.write(
            "strangler rollout: no Redis URL (the stages live in Redis); pass --redis-url or set REDIS_URL\n"
        )
        return 2
    try:
        table = table if table is not None else load_routes(args.routes)
    except RoutesError as exc:
        err.write(f"strangler rollout: cannot load {args.routes}:\n{exc}\nFix the file and run again.\n")
        return 2
    except OSError as exc:
        err.write(f"strangler rollout: cannot read {args.routes}: {exc.strerror or exc}\n")
        return 2
    try:
        return asyncio.run(_run(args, table, out, err))
    except CommandError as exc:
        err.write(f"strangler rollout {args.action}: {exc}\n")
        return exc.code
    except (OSError, ConnectionError, aioredis.RedisError) as exc:
        err.write(f"strangler rollout: cannot use Redis: {type(exc).__name__}: {exc}; check the Redis URL\n")
        return 2
