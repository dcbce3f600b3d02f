"""The autopilot rehearsal (issue 12): the example app migrated by the gateway, with no hand edit.

The real legacy app and new service behind TWO gateway processes sharing one Redis (the same routes file,
the same key prefix); every endpoint of docs/API.md its own route on ``target: auto`` with a rollout plan
tuned for minutes (``routes_yaml``: stages 0, 25, 50, 100; a stage holds ``--min-s`` seconds and
``--min-count`` requests served by new, comparisons in stage 0); bench/rehearsal.py's concurrent mixed
client, split over both gateways, each simulated user sending its own sticky canary key.

Phase A: from all-legacy to all-new. The load runs until every route is at 100 % in Redis and both
gateways apply it (or ``--limit-a`` seconds: fail). Printed per route: its journey (each transition with
its time and the evidence's key numbers, from the audit stream).

Phase B: every route is rolled back by hand to stage 0 (``strangler rollout rollback``, as an operator
would) and climbs again; once at least half of them are in a canary stage (25 or 50 %), the new service is
SIGKILLed. Idempotent requests (GET, HEAD, PUT, DELETE) must not fail (fallback serves them from legacy); a
non-idempotent one in flight when new died may fail: counted apart and allowed. The routes in a canary
must be rolled back by the leader (action ``rollback``); new stays down until they are (or
``--outage-limit`` s: fail), at least ``--outage`` s; then new is restarted on the same port and every
rolled-back route must be promoted again, and every route reach 100 % again (``--limit-b`` each); no
route may be rolled back once new is back.

Throughout, both gateways' applied stages (``/routes``' ``stage_bp``) and lease views are sampled every
0.1 s: a route whose stages differ between the two for more than 1 s fails, and so do two processes
holding the lease at once, one saying it leads while the lease names the other, no leader for more than
5 s, and an automatic event whose ``who`` never held the lease.

A failure is a 5xx or a connection error seen by the client (the app's own 4xx are answers). ``--check``
exits 1 on any failed check. `make autopilot-rehearsal` (about 3 minutes, loopback only, bounded;
bench/README.md has a run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import io
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import svc_setup
from bench.harness import BenchError, Fleet, free_port, log, verdict
from bench.rehearsal import ENDPOINTS, STRANGLER, Client, User, route_lines
from bench.rehearsal import report as rehearsal_report
from proxy.autopilot import cli as rollout_cli
from proxy.rollout.state import Event, events, load
from proxy.routing.table import load_routes

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
STICKY = "X-Rehearsal-User"
AUTOMATIC = frozenset({"promote", "rollback", "plan-changed"})
# The user whose step is running (each user loop is its own task, so its own context).
_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar("user", default=None)


def stage_list(args: argparse.Namespace) -> list[int]:
    """The plan's stages, from ``--stages``."""
    return [int(x) for x in args.stages.replace(" ", "").split(",")]


def routes_yaml(ports: dict[str, int], args: argparse.Namespace) -> str:
    """Every endpoint its own route on ``target: auto`` under one rollout plan tuned for minutes.

    Latency is judged nowhere (latency_ratio 0, gate and rollback p99_ratio 0) and a shadow call may take
    30 s (the upstreams' timeout) rather than 5: the client, both services, two gateways and the databases
    share this machine's two cores, so p99s and stalls measure that contention (bench/rehearsal.py judges
    no latency either), and one shadow timeout makes a route NOT READY for its whole epoch. The other
    rollback triggers are the defaults but ``min_count``. Fallback: on a refused connection (any method),
    and, for idempotent methods, on a reset or 10 s without an answer (``timeout``: off in the
    repository's routes.yaml, since it may resend a request new has seen; on here, as for any deployment
    that wants no idempotent request to fail when new dies mid-request).
    """
    shadow = (f"{{queue: 5000, concurrency: 64, timeout: 30, min_compared: {args.min_compared}, ready_min_s: "
              f"{args.ready_min_s:g}, ready_min_count: {args.ready_min_count}, latency_ratio: 0}}")
    lines = [
        "upstreams:",
        f'  legacy: {{url: "http://127.0.0.1:{ports["legacy"]}", connect_timeout: 1.0, timeout: 30.0, '
        "pool_size: 64}",
        f'  new: {{url: "http://127.0.0.1:{ports["new"]}", connect_timeout: 1.0, timeout: 30.0, '
        "pool_size: 64}",
        "default: legacy",
        f"shadow: {shadow}",
        "fallback: {connect: true, timeout: 10, on_5xx: false}",
        "circuit_breaker: {consecutive: 5, failure_rate: 0.5, min_requests: 20, window_s: 10, "
        "cool_down_s: 5, half_open: 3}",
        "rollout:",
        f"  stages: [{args.stages}]",
        f'  sticky: "header:{STICKY}"',
        f"  gate: {{verdict: true, min_s: {args.min_s:g}, min_count: {args.min_count}, error_margin: 0.01, "
        "p99_ratio: 0}",
        f"  rollback: {{error_rate: 0.05, connect_error_rate: 0.05, p99_ratio: 0, diff_rate: 0.01, "
        f"min_count: {args.rollback_min_count}}}",
        "routes:",
        *route_lines("auto", "true"),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Failure:
    """One failed client request: when (s since the start), method, path and what came back."""

    at: float
    method: str
    path: str
    what: str


class MigratingClient(Client):
    """bench/rehearsal.py's client, counting failures instead of stopping on them, and sending each
    simulated user's sticky key (so a canary stage splits users, not the one client address)."""

    def __init__(self, base: str, users: int, rate: float, seed: int, t0: float) -> None:
        super().__init__(base, users, rate, seed)
        self.t0 = t0
        self.failures: list[Failure] = []

    def extra_headers(self) -> dict[str, str]:
        user = _USER.get()
        return {STICKY: user.email} if user is not None else {}

    async def step(self, s: aiohttp.ClientSession, u: User) -> None:
        _USER.set(u)
        await super().step(s, u)

    async def sign_in(self, s: aiohttp.ClientSession, u: User) -> None:
        _USER.set(u)
        await super().sign_in(s, u)

    async def call(self, s: aiohttp.ClientSession, method: str, path: str, body: Any = None,
                   user: User | None = None) -> tuple[int, Any]:  # fmt: skip
        try:
            status, out = await super().call(s, method, path, body, user)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures.append(Failure(time.monotonic() - self.t0, method, path, type(exc).__name__))
            return 599, None
        if status >= 500:
            self.failures.append(Failure(time.monotonic() - self.t0, method, path, str(status)))
        return status, out


@dataclass
class Sample:
    """Both gateways' view at one moment: stage per route (basis points) and who holds the lease."""

    at: float
    stages: list[dict[str, int]]
    leaders: list[bool]
    owners: list[str]
    key_owner: str | None


@dataclass
class Watch:
    """What the sampler saw through the run."""

    samples: list[Sample] = field(default_factory=list)
    errors: int = 0


async def sample_loop(admins: list[str], redis: aioredis.Redis, lease_key: str, t0: float, watch: Watch,
                      stop: asyncio.Event) -> None:  # fmt: skip
    """Every ~0.1 s: both gateways' /routes (applied stages, lease view) and the lease key's owner."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while not stop.is_set():
            try:
                docs = []
                for admin in admins:
                    async with s.get(f"http://{admin}/routes") as r:
                        docs.append(await r.json())
                key = await redis.get(lease_key)
            except (aiohttp.ClientError, TimeoutError, aioredis.RedisError):
                watch.errors += 1
            else:
                watch.samples.append(Sample(
                    time.monotonic() - t0,
                    [{r["name"]: r["stage_bp"] for r in d["routes"] if "stage_bp" in r} for d in docs],
                    [bool((d.get("rollout") or {}).get("leader")) for d in docs],
                    [str((d.get("rollout") or {}).get("owner", "")) for d in docs],
                    key.decode() if isinstance(key, bytes) else key,
                ))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


def judge_agreement(watch: Watch, limit_s: float = 1.0) -> tuple[list[str], dict[str, Any]]:
    """Disagreements between the two gateways lasting more than ``limit_s``, two leaders at once, and
    the numbers for the table: (failures, stats)."""
    wrong: list[str] = []
    longest: dict[str, float] = {}
    began: dict[str, float] = {}
    for smp in watch.samples:
        a, b = smp.stages
        for name in set(a) | set(b):
            if a.get(name) != b.get(name):
                began.setdefault(name, smp.at)
            elif name in began:
                longest[name] = max(longest.get(name, 0.0), smp.at - began.pop(name))
    end = watch.samples[-1].at if watch.samples else 0.0
    for name, t in began.items():  # still differing at the end
        longest[name] = max(longest.get(name, 0.0), end - t)
    for name, d in sorted(longest.items()):
        if d > limit_s:
            wrong.append(f"the gateways disagreed on {name}'s stage for {d:.1f} s (> {limit_s:g} s)")
    both = [smp.at for smp in watch.samples if all(smp.leaders)]
    if both:
        wrong.append(f"both gateways held the lease at once in {len(both)} samples (first {both[0]:.1f} s)")
    # Exactly one leader: the lease key names one of the two processes, and a process that says it leads
    # is the one the key names (a gap without a key longer than the lease's TTL would be an election).
    owners = {o for smp in watch.samples for o in smp.owners if o}
    strangers = {smp.key_owner for smp in watch.samples if smp.key_owner and smp.key_owner not in owners}
    if strangers:
        wrong.append(f"the lease named {sorted(strangers)}, neither gateway")
    liars = [smp.at for smp in watch.samples
             if any(lead and own != smp.key_owner for lead, own in zip(smp.leaders, smp.owners, strict=True))]
    if liars:
        wrong.append(f"a gateway said it led while the lease named another, in {len(liars)} samples")
    first = next((smp.at for smp in watch.samples if smp.key_owner), None)
    gap, began_gap = 0.0, None
    for smp in watch.samples:
        if first is None or smp.at < first:
            continue
        if smp.key_owner is None:
            began_gap = smp.at if began_gap is None else began_gap
        elif began_gap is not None:
            gap, began_gap = max(gap, smp.at - began_gap), None
    if first is None:
        wrong.append("no gateway ever held the lease")
    elif gap > 5.0:
        wrong.append(f"no leader for {gap:.1f} s")
    holders = {smp.key_owner for smp in watch.samples if smp.key_owner}
    stats = {"samples": len(watch.samples), "errors": watch.errors,
             "longest_s": max(longest.values(), default=0.0), "holders": sorted(holders),
             "none_leading": sum(1 for smp in watch.samples if not any(smp.leaders))}  # fmt: skip
    if not watch.samples:
        wrong.append("no sample of the gateways' stages was taken")
    return wrong, stats


async def percents(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Each route's stored percent (absent: never decided, 0)."""
    states = await load(redis, prefix)
    return {name: states[name].percent if name in states else 0 for name, _, _ in ENDPOINTS}


def applied(watch: Watch) -> list[dict[str, int]]:
    """The latest applied stages of both gateways (basis points)."""
    return watch.samples[-1].stages if watch.samples else [{}, {}]


async def wait_until(what: str, cond: Any, limit: float, every: float = 0.5) -> float:
    """Poll ``cond()`` (async) until true; the seconds it took. BenchError past ``limit``."""
    began = time.monotonic()
    while not await cond():
        if time.monotonic() - began > limit:
            raise BenchError(f"{what}: not within {limit:g} s")
        await asyncio.sleep(every)
    return time.monotonic() - began


def evidence_line(ev: Event) -> str:
    """The key numbers of a transition's evidence."""
    e = ev.evidence or {}
    new, legacy = e.get("new") or {}, e.get("legacy") or {}
    match = e.get("match_rate")
    parts = [f"{e.get('verdict') or '-'}", f"compared {e.get('compared', 0)}",
             f"match {'-' if match is None else f'{match:.1%}'}",
             f"new served {new.get('requests', 0)} (5xx {new.get('errors_5xx', 0)}, connect "
             f"{new.get('connect_errors', 0)})", f"legacy served {legacy.get('requests', 0)}"]  # fmt: skip
    return ", ".join(parts)


def journeys(evs: list[Event], t0_wall: float) -> list[str]:
    """Per route, each transition (oldest first) with its time since the start and its evidence."""
    out = []
    for name, _, _ in ENDPOINTS:
        mine = sorted((e for e in evs if e.route == name), key=lambda e: e.at)
        steps = " ".join(f"{e.from_pct}->{e.to_pct}@{e.at - t0_wall:.0f}s" + ("" if e.action == "promote" else
                         f"({e.action})") for e in mine)  # fmt: skip
        out.append(f"{name:<14} {steps or '-'}")
        for e in mine:
            if e.action in ("rollback", "promote"):
                out.append(f"{'':<16}{e.action} {e.from_pct}->{e.to_pct} at {e.at - t0_wall:.1f} s: "
                           f"{evidence_line(e)}" + (f"; why: {e.why}" if e.action == "rollback" else ""))
    return out


def failures_line(fails: list[Failure]) -> str:
    by: dict[str, int] = {}
    for f in fails:
        key = f"{f.method} {f.what}"
        by[key] = by.get(key, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(by.items())) or "none"


@dataclass
class Rig:
    """The running parts: services, both gateways, where the stages live."""

    fleet: Fleet
    world: svc_setup.World
    services: dict[str, tuple[int, int]]
    extra: dict[str, str]
    jwt: str
    routes: Path
    prefix: str
    listens: list[str]
    admins: list[str]


def rehearse(tmp: Path, admin_url: str, redis_url: str, args: argparse.Namespace) -> list[str]:
    """Start the services and both gateways, then run the phases; what failed."""
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(svc_setup.scratch_world(admin_url, redis_url, users=50, posts=200))
        fleet = Fleet(tmp)
        stack.callback(fleet.close)
        secret, jwt = os.urandom(24).hex(), os.urandom(32).hex()
        extra = {"DRY_RUN_SECRET": secret, "LOG_LEVEL": "error", "BCRYPT_COST": "4"}
        services = svc_setup.start_services(fleet, world, extra, jwt_secret=jwt)
        ports = {name: port for name, (port, _) in services.items()}
        routes = tmp / "routes.yaml"
        routes.write_text(routes_yaml(ports, args))
        prefix = world.redis_prefix + "shadow:"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": world.database_url,
               "STRANGLER_DRY_RUN_SECRET": secret, "STRANGLER_SHADOW_PREFIX": prefix}  # fmt: skip
        listens, admins = [], []
        for i in range(2):
            listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            cmd = [str(STRANGLER), "proxy", "--routes", str(routes), "--listen", listen, "--admin", admin,
                   "--no-access-log", "--reload-interval", "0.5"]
            fleet.start(f"gateway{i + 1}", cmd,
                        env=env, port=int(listen.rsplit(":", 1)[1]), timeout=60)  # fmt: skip
            listens.append(listen)
            admins.append(admin)
        rig = Rig(fleet, world, services, extra, jwt, routes, prefix, listens, admins)
        return asyncio.run(run_phases(rig, redis_url, args))


async def run_phases(rig: Rig, redis_url: str, args: argparse.Namespace) -> list[str]:
    """Phase A, phase B and the two-process check; prints the tables and returns what failed."""
    wrong: list[str] = []
    fleet, world, services, extra, jwt = rig.fleet, rig.world, rig.services, rig.extra, rig.jwt
    routes, prefix, listens, admins = rig.routes, rig.prefix, rig.listens, rig.admins
    redis = aioredis.Redis.from_url(redis_url)
    t0, t0_wall = time.monotonic(), time.time()
    half = max(1, args.users // 2)
    clients = [MigratingClient(f"http://{listen}", half, args.rate / 2, seed=i + 1, t0=t0)
               for i, listen in enumerate(listens)]  # fmt: skip
    watch, stop = Watch(), asyncio.Event()
    sampler = asyncio.ensure_future(sample_loop(admins, redis, prefix + "rollout:leader", t0, watch, stop))
    longest = args.limit_a + 3 * args.limit_b + args.outage_limit
    load_task = asyncio.ensure_future(asyncio.gather(*(c.run(longest) for c in clients)))
    table = load_routes(str(routes))

    def stored_all(pct: int) -> Any:
        async def cond() -> bool:
            if load_task.done():
                await load_task  # the client died: say why
            p = await percents(redis, prefix)
            return all(v == pct for v in p.values()) and all(
                all(st.get(n) == pct * 100 for n, _, _ in ENDPOINTS) for st in applied(watch))
        return cond

    try:
        # Phase A: all-legacy to all-new.
        log(f"phase A: {len(ENDPOINTS)} routes on target: auto, two gateways, ~{args.rate:g} req/s")
        try:
            took = await wait_until("phase A: every route at 100 %", stored_all(100), args.limit_a)
            log(f"phase A: every route at 100 % after {took:.0f} s")
        except BenchError as exc:
            wrong.append(str(exc))
            log(str(exc))
        a_end = time.monotonic() - t0
        status = await rollout_status(world.redis_url, prefix, table)
        off = {r["route"]: r.get("percent") for r in status["routes"] if r.get("percent") != 100}
        if off:
            wrong.append(f"phase A: strangler rollout status --json shows routes short of 100 %: {off}")
        fails_a = [f for c in clients for f in c.failures]
        evs_a = await events(redis, prefix, count=2000)
        print("\n## phase A: from all-legacy to all-new (transitions: from->to@seconds since start)")
        for line in journeys(evs_a, t0_wall):
            print(line)
        # What the shadow saw differ (a match rate near the threshold holds a route at stage 0 longer).
        for name, r in (await asyncio.to_thread(rehearsal_report, admins[0])).items():
            paths = ", ".join(f"{p} x{n}" for p, n in r.get("paths", [])[:3])
            if paths:
                rate = r.get("match_rate")
                shown = "-" if rate is None else f"{rate:.2%}"
                print(f"  {name}: {r.get('compared', 0)} compared, match {shown}; differing: {paths}")
        sent_a = sum(c.load.sent for c in clients)
        print(f"phase A: {a_end:.0f} s, {sent_a} client requests, failed: {len(fails_a)} "
              f"({failures_line(fails_a)})")
        if fails_a:
            wrong.append(f"phase A: {len(fails_a)} client requests failed ({failures_line(fails_a)})")
        want = list(zip(stage_list(args), stage_list(args)[1:], strict=False))
        for name, _, _ in ENDPOINTS:  # promoted through every stage, in order, by the autopilot
            steps = [(e.from_pct, e.to_pct) for e in sorted(evs_a, key=lambda e: e.at) if e.route == name]
            if steps != want:
                wrong.append(f"phase A: {name} went {steps}, not {want}")
        for e in evs_a:
            if e.action == "rollback":
                wrong.append(f"phase A: {e.route} was rolled back at {e.at - t0_wall:.0f} s: {e.why}")

        # Phase B: a fresh climb, new killed while routes are in canary.
        if not wrong or args.phase_b_anyway:
            wrong += await phase_b(args, stored_all(100), fleet, world, services, extra, jwt, routes, table,
                                   redis, prefix, clients, watch, load_task, t0, t0_wall, a_end)
    finally:
        for c in clients:
            c.stopped = True
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(load_task, 30)
        await sampler
    # Two processes, one Redis.
    agree_wrong, stats = judge_agreement(watch)
    evs = await events(redis, prefix, count=5000)
    auto_who = {e.who for e in evs if e.action in AUTOMATIC}
    held = set(stats["holders"])
    strangers = sorted(auto_who - held)
    if strangers:
        agree_wrong.append(f"automatic events by {strangers}, which never held the lease ({held})")
    owners = {o for smp in watch.samples for o in smp.owners}
    print(f"\n## two gateways, one Redis: {stats['samples']} samples (every ~0.1 s, {stats['errors']} "
          f"failed), longest stage disagreement {stats['longest_s']:.2f} s, lease holders seen "
          f"{stats['holders']} of the processes {sorted(owners)}; automatic events by {sorted(auto_who)}; "
          f"samples with no leader {stats['none_leading']}")
    wrong += agree_wrong
    sent = sum(c.load.sent for c in clients)
    statuses: dict[int, int] = {}
    for c in clients:
        for k, v in c.load.by_status.items():
            statuses[k] = statuses.get(k, 0) + v
    print(f"client: {sent} requests ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})")
    await redis.aclose()
    return wrong


async def rollout_status(redis_url: str, prefix: str, table: Any) -> dict[str, Any]:
    """``strangler rollout status --json``'s document (run in-process, in a thread: it runs its own loop)."""
    out = io.StringIO()
    args = ["status", "--json", "--redis-url", redis_url, "--prefix", prefix]
    code = await asyncio.to_thread(rollout_cli.main, args, out, out, table)
    if code != 0:
        raise BenchError(f"strangler rollout status exited {code}: {out.getvalue()[-500:]}")
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


async def phase_b(args: argparse.Namespace, all_at_100: Any, fleet: Fleet, world: svc_setup.World,
                  services: dict[str, tuple[int, int]], extra: dict[str, str], jwt: str, routes: Path,
                  table: Any, redis: aioredis.Redis, prefix: str, clients: list[MigratingClient],
                  watch: Watch,
                  load_task: Any, t0: float, t0_wall: float, a_end: float) -> list[str]:  # fmt: skip
    """Roll every route back by hand, kill new while they climb, check the rollbacks and the return."""
    wrong: list[str] = []
    cli_env = ["--redis-url", world.redis_url, "--prefix", prefix]
    b_start_wall = time.time()
    log("phase B: every route rolled back by hand to stage 0 (strangler rollout rollback)")
    for name, _, _ in ENDPOINTS:
        said = io.StringIO()
        code = await asyncio.to_thread(rollout_cli.main, ["rollback", name, *cli_env], said, said, table)
        if code != 0:
            wrong.append(f"phase B: strangler rollout rollback {name} exited {code}")
    fails_before = {id(c): len(c.failures) for c in clients}

    async def enough_in_canary() -> bool:
        if load_task.done():
            await load_task
        p = await percents(redis, prefix)
        return sum(1 for v in p.values() if 0 < v < 100) * 2 >= len(p)

    try:
        await wait_until("phase B: half the routes in a canary stage", enough_in_canary, args.limit_b)
    except BenchError as exc:
        return [*wrong, str(exc)]
    canary = {n: v for n, v in (await percents(redis, prefix)).items() if 0 < v < 100}
    port, pid = services["new"]
    kill_wall, kill_at = time.time(), time.monotonic() - t0
    log(f"phase B: SIGKILL new (pid {pid}) with {len(canary)} routes in canary: {canary}")
    os.killpg(pid, signal.SIGKILL)
    fleet.stop(pid, grace=1.0)

    async def rolled_back() -> bool:
        evs = await events(redis, prefix, count=2000)
        back = {e.route for e in evs if e.action == "rollback" and e.at >= kill_wall}
        # Every route in canary at the kill, and any that entered one since, must be back at 0.
        p = await percents(redis, prefix)
        return all(n in back for n in canary) and all(v in (0, 100) for v in p.values())

    waited = 0.0
    try:
        waited = await wait_until("phase B: the routes in canary rolled back", rolled_back, args.outage_limit)
    except BenchError as exc:
        wrong.append(str(exc))
    await asyncio.sleep(max(0.0, args.outage - (time.monotonic() - t0 - kill_at)))
    down_s = time.monotonic() - t0 - kill_at
    log(f"phase B: rolled back after {waited:.0f} s; restarting new after {down_s:.0f} s down")
    await asyncio.to_thread(svc_setup.start_service, fleet, world, "new", port, jwt, extra, "new-restarted")
    restart_wall = time.time()
    back_at = time.monotonic() - t0

    async def promoted_again() -> bool:
        if load_task.done():
            await load_task
        evs = await events(redis, prefix, count=2000)
        again = {e.route for e in evs if e.action == "promote" and e.at >= restart_wall}
        return all(n in again for n in canary)

    try:
        took = await wait_until("phase B: the rolled-back routes promoted again", promoted_again,
                                args.limit_b)  # fmt: skip
        log(f"phase B: every rolled-back route promoted again {took:.0f} s after new returned")
    except BenchError as exc:
        wrong.append(str(exc))
    try:  # and on to all-new again: the journey ends where phase A did
        took = await wait_until("phase B: every route at 100 % again", all_at_100, args.limit_b)
        log(f"phase B: every route at 100 % again {took:.0f} s after new returned")
    except BenchError as exc:
        wrong.append(str(exc))
    evs = [e for e in await events(redis, prefix, count=5000) if e.at >= b_start_wall]
    for e in evs:  # new is back and healthy: nothing may roll back any more
        if e.action == "rollback" and e.at > restart_wall:
            wrong.append(f"phase B: {e.route} rolled back {e.at - restart_wall:.0f} s after new returned: "
                         f"{e.why}")
    print(f"\n## phase B: rolled back by hand at {b_start_wall - t0_wall:.0f} s, new killed at "
          f"{kill_at:.0f} s "
          f"and back at {back_at:.0f} s ({back_at - kill_at:.0f} s down)")
    for line in journeys(evs, t0_wall):
        print(line)
    fails = [f for c in clients for f in c.failures[fails_before[id(c)]:]]
    idem = [f for f in fails if f.method in IDEMPOTENT]
    other = [f for f in fails if f.method not in IDEMPOTENT]
    print(f"phase B: failed idempotent requests {len(idem)} ({failures_line(idem)}); failed non-idempotent "
          f"{len(other)} ({failures_line(other)}: allowed, in flight when new died)")
    for f in fails[:10]:
        print(f"  {f.at:.2f} s {f.method} {f.path}: {f.what}")
    if idem:
        wrong.append(f"phase B: {len(idem)} idempotent requests failed ({failures_line(idem)})")
    late = [f for f in other if not kill_at - 1 <= f.at <= kill_at + 2]
    if late:
        wrong.append(f"phase B: {len(late)} non-idempotent requests failed away from the kill "
                     f"({failures_line(late)})")
    return wrong


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100,
                   help="simulated users, split over the gateways, each its own sticky key (100)")
    p.add_argument("--rate", type=float, default=200, help="requests per second in all, about (200)")
    p.add_argument("--stages", default="0, 25, 50, 100", help="rollout stages (0, 25, 50, 100)")
    p.add_argument("--min-s", type=float, default=12, help="rollout gate.min_s (12)")
    p.add_argument("--min-count", type=int, default=20, help="rollout gate.min_count (20)")
    p.add_argument("--rollback-min-count", type=int, default=10, help="rollout rollback.min_count (10)")
    p.add_argument("--min-compared", type=int, default=30, help="shadow.min_compared (30)")
    p.add_argument("--ready-min-s", type=float, default=8, help="shadow.ready_min_s (8)")
    p.add_argument("--ready-min-count", type=int, default=20, help="shadow.ready_min_count (20)")
    p.add_argument("--limit-a", type=float, default=300, help="phase A's limit in seconds (300)")
    p.add_argument("--limit-b", type=float, default=120, help="phase B's limits in seconds (120)")
    p.add_argument("--outage", type=float, default=10, help="new stays down at least this long (10 s)")
    p.add_argument("--outage-limit", type=float, default=60,
                   help="... and at most this long waiting for the rollbacks (60 s)")
    p.add_argument("--phase-b-anyway", action="store_true", help="run phase B even when phase A failed")
    p.add_argument("--check", action="store_true", help="exit 1 unless every check passed")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="strangler-autopilot-") as tmp:
        with svc_setup.servers(Path(tmp)) as (admin_url, redis_url):
            work = Path(tmp) / "run"
            work.mkdir()
            try:
                wrong = rehearse(work, admin_url, redis_url, args)
            finally:
                if os.environ.get("AUTOPILOT_KEEP_LOGS"):
                    keep = Path(os.environ["AUTOPILOT_KEEP_LOGS"])
                    keep.mkdir(parents=True, exist_ok=True)
                    for f in work.glob("*.log"):
                        (keep / f.name).write_bytes(f.read_bytes())
    return verdict(wrong, args.check)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
