"""The migration rehearsal: is the gateway's verdict right on the worked example, under concurrent traffic?

The real legacy app and new service behind the gateway; every endpoint of docs/API.md its own route
(the event stream and the WebSocket apart: they are not compared), reads shadowed at sample 1.0 and writes
with ``writes: true``, the repository's default thresholds and no hand-written ignore rules; a concurrent
client mixing what many users do (register, log in, refresh, log out, read, create, patch, delete).

Phase 1 runs with every route on legacy, then every route is flipped to new (writes: false: legacy has no
dry run) and phase 2 runs. The two implementations agree (the contract suite passes on both), so a
trustworthy verdict is READY on every route and stays near 100 % after the flip. Printed per route: the
time to READY, comparisons and match rate in each phase (phase 2 from counter deltas), the verdict, the
races seen (reads whose data changed during the comparison), and the paths that differed, were learned as
noise, or as generated (compared by shape).

`make rehearsal` (a few minutes, loopback only, bounded). `--plant post.get.title` (the new service's test
switch, docs/API.md) plants a difference and runs phase 1 only: the affected route must come out NOT READY
naming the planted path, and every other route READY; `--plant all` runs the unplanted rehearsal, then each
plant in turn (each on its own database and shadow prefix). `--check` exits 1 unless the verdicts are
right: unplanted, every route READY in phase 1, none ever reported NOT READY, and >= 99.9 % matched after
the flip (issue 9's acceptance).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import svc_setup
from bench.harness import BenchError, Fleet, free_port, log, verdict

STRANGLER = Path(sys.executable).parent / "strangler"
# (name, method, path): docs/API.md's endpoints, one route each (streams are never compared).
ENDPOINTS = [
    ("health", "GET", "/health"), ("health-ready", "GET", "/health/ready"),
    ("openapi", "GET", "/openapi.json"),
    ("register", "POST", "/api/v1/auth/register"), ("login", "POST", "/api/v1/auth/login"),
    ("refresh", "POST", "/api/v1/auth/refresh"), ("logout", "POST", "/api/v1/auth/logout"),
    ("me", "GET", "/api/v1/auth/me"),
    ("users-create", "POST", "/api/v1/users"), ("users-list", "GET", "/api/v1/users"),
    ("users-get", "GET", "/api/v1/users/{id}"), ("users-patch", "PATCH", "/api/v1/users/{id}"),
    ("users-delete", "DELETE", "/api/v1/users/{id}"), ("users-posts", "GET", "/api/v1/users/{id}/posts"),
    ("posts-list", "GET", "/api/v1/posts"), ("posts-create", "POST", "/api/v1/posts"),
    ("posts-get", "GET", "/api/v1/posts/{id}"), ("posts-patch", "PATCH", "/api/v1/posts/{id}"),
    ("posts-delete", "DELETE", "/api/v1/posts/{id}"),
]  # fmt: skip


def routes_yaml(ports: dict[str, int], target: str, ready_min_s: float | None = None) -> str:
    """Every endpoint its own shadowed route on ``target`` (writes shadowed only while on legacy); the
    repository's default thresholds, but for ``ready_min_s`` when given, and latency not judged."""
    writes = "true" if target == "legacy" else "false"
    hold = "" if ready_min_s is None else f", ready_min_s: {ready_min_s:g}"
    # latency_ratio 0: the client, both services, the gateway and the databases share this machine's cores,
    # so p99s measure that contention; latency is `make bench-services`'s subject, correctness this one's.
    hold += ", latency_ratio: 0"
    lines = ["upstreams:",
             f'  legacy: {{url: "http://127.0.0.1:{ports["legacy"]}", timeout: 30.0, pool_size: 64}}',
             f'  new: {{url: "http://127.0.0.1:{ports["new"]}", timeout: 30.0, pool_size: 64}}',
             "default: legacy", f"shadow: {{queue: 5000, concurrency: 64{hold}}}", "routes:"]  # fmt: skip
    return "\n".join([*lines, *route_lines(target, writes)]) + "\n"


def route_lines(target: str, writes: str) -> list[str]:
    """The ``routes:`` entries: every endpoint its own route on ``target``, reads shadowed, writes with
    ``writes: <writes>``."""
    lines = []
    for name, method, path in ENDPOINTS:
        sample = f"{{sample: 1.0, writes: {writes}}}" if method != "GET" else "{sample: 1.0}"
        match = f'{{methods: [{method}], path: "{path}"}}'
        lines.append(f"  - {{name: {name}, match: {match}, target: {target}, shadow: {sample}}}")
    return lines


@dataclass
class User:
    """One simulated client: its account, tokens and posts."""

    email: str
    password: str
    id: int = 0
    access: str = ""
    refresh: str = ""
    posts: list[int] = field(default_factory=list)


@dataclass
class Load:
    """What the client did: requests by outcome class."""

    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Client:
    """Many users doing what users do, through the gateway, paced to about ``rate`` requests a second."""

    def __init__(self, base: str, users: int, rate: float, seed: int) -> None:
        self.base = base
        self.rand = random.Random(seed)
        self.users = [User(f"reh-{seed}-{i}-{secrets.token_hex(3)}@rehearsal.example", "rehearsal-pw-123")
                      for i in range(users)]  # fmt: skip
        self.pause = users / rate
        self.load = Load()
        self.stopped = False  # set to end run() early (bench/autopilot.py runs the load until events)

    async def call(self, s: aiohttp.ClientSession, method: str, path: str, body: Any = None,
                   user: User | None = None) -> tuple[int, Any]:  # fmt: skip
        headers = self.extra_headers()
        if user is not None and user.access:
            headers["Authorization"] = f"Bearer {user.access}"
        async with s.request(method, self.base + path, json=body, headers=headers) as r:
            raw = await r.read()
        self.load.sent += 1
        self.load.by_status[r.status] = self.load.by_status.get(r.status, 0) + 1
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, None

    def extra_headers(self) -> dict[str, str]:
        """Headers every request carries (none here; bench/autopilot.py adds a sticky canary key)."""
        return {}

    async def sign_in(self, s: aiohttp.ClientSession, u: User) -> None:
        account = {"email": u.email, "password": u.password}
        status, body = await self.call(s, "POST", "/api/v1/auth/register", {**account, "name": "Rehearsal"})
        if status == 201:
            tokens = body["tokens"]
            u.id, u.posts = body["user"]["id"], []
            u.access, u.refresh = tokens["access_token"], tokens["refresh_token"]
        else:
            status, body = await self.call(s, "POST", "/api/v1/auth/login", account)
            if status == 200:
                u.access, u.refresh = body["access_token"], body["refresh_token"]

    async def step(self, s: aiohttp.ClientSession, u: User) -> None:
        """One operation, weighted like a read-mostly API."""
        r = self.rand.random()
        post = self.rand.choice(u.posts) if u.posts else None
        other = self.rand.choice(self.users)
        if r < 0.14:
            await self.call(s, "GET", f"/api/v1/posts?limit={self.rand.choice((5, 10, 20))}")
        elif r < 0.23:
            await self.call(s, "GET", f"/api/v1/users/{other.id or 1}")
        elif r < 0.33:
            await self.call(s, "GET", f"/api/v1/users/{other.id or 1}/posts?limit=5")
        elif r < 0.36:  # the rare ones, ~2 % each: enough comparisons for a verdict within a phase
            await self.call(s, "GET", self.rand.choice(("/health", "/health/ready", "/openapi.json")))
        elif r < 0.46 and other.posts:
            await self.call(s, "GET", f"/api/v1/posts/{self.rand.choice(other.posts)}")
        elif r < 0.52:
            await self.call(s, "GET", "/api/v1/auth/me", user=u)
        elif r < 0.56:
            await self.call(s, "GET", "/api/v1/users?limit=10")
        elif r < 0.66:
            status, body = await self.call(s, "POST", "/api/v1/posts", {"title": "t", "body": "b" * 40}, u)
            if status == 201:
                u.posts.append(body["id"])
        elif r < 0.72 and post is not None:
            await self.call(s, "PATCH", f"/api/v1/posts/{post}", {"title": f"t{self.rand.randint(0, 9)}"}, u)
        elif r < 0.76 and post is not None:
            if (await self.call(s, "DELETE", f"/api/v1/posts/{post}", user=u))[0] == 204:
                u.posts.remove(post)
        elif r < 0.80:
            await self.call(s, "PATCH", f"/api/v1/users/{u.id}", {"name": f"N{self.rand.randint(0, 99)}"}, u)
        elif r < 0.86:
            status, body = await self.call(s, "POST", "/api/v1/auth/refresh", {"refresh_token": u.refresh})
            if status == 200:
                u.access, u.refresh = body["access_token"], body["refresh_token"]
        elif r < 0.90:
            await self.call(s, "POST", "/api/v1/auth/logout", user=u)
            await self.sign_in(s, u)
        elif r < 0.92:
            if (await self.call(s, "DELETE", f"/api/v1/users/{u.id}", user=u))[0] == 204:
                await self.sign_in(s, u)
        elif r < 0.95:
            await self.call(s, "POST", "/api/v1/users",
                            {"email": f"x{secrets.token_hex(5)}@rehearsal.example", "password": "pw-1234567",
                             "name": "Other"})  # fmt: skip
        elif r < 0.97:
            await self.call(s, "POST", "/api/v1/auth/login", {"email": u.email, "password": "wrong password"})
        else:
            await self.call(s, "GET", self.rand.choice(("/health", "/health/ready", "/openapi.json")))

    async def run(self, seconds: float) -> None:
        """Every user in its own loop until ``seconds`` have passed (load pacing, not waiting for events) or
        ``stopped`` is set (the phase saw what it waits for)."""
        end = time.monotonic() + seconds
        self.stopped = False
        conn = aiohttp.TCPConnector(limit=len(self.users))
        async with aiohttp.ClientSession(connector=conn) as s:
            async def one(u: User) -> None:
                if not u.access:
                    await self.sign_in(s, u)
                while time.monotonic() < end and not self.stopped:
                    await self.step(s, u)
                    await asyncio.sleep(self.rand.uniform(0.5, 1.5) * self.pause)

            await asyncio.gather(*(one(u) for u in self.users))


# The new service's planted differences (SERVICES_TEST_DIFF, docs/API.md): the route each one must turn NOT
# READY and the path it must name; every other route must stay READY. (``user.name`` shows wherever a user
# does, so it is left to the end-to-end tests.)
PLANTS: dict[str, tuple[str, str]] = {
    "post.get.title": ("posts-get", "$.title"),
    "post.create.status": ("posts-create", "status"),
    "post.create.missing": ("posts-create", "$.updated_at"),
    "post.patch.precision": ("posts-patch", "$.created_at"),
}


def report(admin: str) -> dict[str, dict[str, Any]]:
    """The gateway's report, by route name."""
    with urllib.request.urlopen(f"http://{admin}/report.json", timeout=10) as r:
        return {route["name"]: route for route in json.loads(r.read())["routes"]}


@dataclass
class Seen:
    """What the polled reports said during a phase: when each route was first READY, and the routes ever
    NOT READY (a trustworthy verdict never says it of a route that matches)."""

    ready_at: dict[str, float] = field(default_factory=dict)
    not_ready: dict[str, list[str]] = field(default_factory=dict)


async def phase(
    client: Client, admin: str, seconds: float, seen: Seen, t0: float,
    done: Callable[[dict[str, Any]], bool] | None = None, max_seconds: float = 0.0,
) -> None:
    """Run the load while polling the report every few seconds: ``seconds`` at least, then until ``done``
    says the reports show what the phase waits for, or ``max_seconds`` (a slower machine takes longer to
    make a rare route's comparisons: the phase waits for them rather than judge too early)."""
    sent, began = client.load.sent, time.monotonic()
    load = asyncio.ensure_future(client.run(max(seconds, max_seconds)))
    while not load.done():
        await asyncio.wait([load], timeout=2)
        reports = await asyncio.to_thread(report, admin)
        if done is not None and time.monotonic() - began >= seconds and done(reports):
            client.stopped = True
        for name, r in reports.items():
            if r["verdict"] == "READY":
                seen.ready_at.setdefault(name, time.monotonic() - t0)
            elif r["verdict"] == "NOT READY" and name not in seen.not_ready:
                c = r.get("counters", {})
                top = ", ".join(f"{p} x{n}" for p, n in r.get("paths", [])[:3])
                seen.not_ready[name] = [*r.get("reasons", []), (
                    f"at {time.monotonic() - t0:.0f} s: {r['compared']} compared, {c.get('raced', 0)} raced,"
                    f" {c.get('aa_pairs', 0)} A/A pairs; differing {top or '-'}"
                )]  # fmt: skip
    await load
    n = client.load.sent - sent
    log(f"{n} requests in {time.monotonic() - began:.0f} s ({n / (time.monotonic() - began):.0f} a second)")


def rates(before: dict[str, Any] | None, after: dict[str, Any]) -> tuple[int, float | None]:
    """Comparisons and match rate between two reports of one route (``before`` None, or of an earlier
    epoch: ``after``'s own, since the epoch began; the flip starts one)."""
    if before is not None and (before.get("epoch") or {}).get("id") != (after.get("epoch") or {}).get("id"):
        before = None
    compared = after["compared"] - (before["compared"] if before else 0)
    differed = after["differed"] - (before["differed"] if before else 0)
    return compared, (None if compared <= 0 else 1 - differed / compared)


def table(first: dict[str, Any], last: dict[str, Any] | None, seen: Seen) -> list[str]:
    """The rehearsal's table, one row per route (phase 2's columns when there was a phase 2): when it was
    first READY, comparisons and match rate per phase, races seen (both phases), how long sampled writes
    waited for their dry run (p50 / p99 ms), and the paths that differed, were noise or generated."""
    out = [f"{'route':<14}{'READY after':>12}{'compared':>10}{'match':>9}{'verdict (1)':>18}"
           f"{'compared 2':>12}{'match 2':>9}{'races':>7}{'dry-run wait ms':>16}"
           "  differing / noise / generated paths"]  # fmt: skip
    for name, _, _ in ENDPOINTS:
        a = first.get(name)
        b = last.get(name) if last is not None else None
        if a is None:
            out.append(f"{name:<14} no data")
            continue
        c1, m1 = rates(None, a)
        c2, m2 = rates(a, b) if b is not None else (0, None)
        when = f"{seen.ready_at[name]:.0f} s" if name in seen.ready_at else "never"
        both = [x for x in (a, b) if x is not None]
        paths = ", ".join(p for p, _ in a["paths"][:3]) or "-"
        noise = ", ".join(sorted({p for x in both for p, _ in x["noise_paths"]})[:3]) or "-"
        generated = ", ".join(sorted({g["path"] for x in both for g in x.get("generated", [])})[:4]) or "-"
        races = sum(x.get("raced", 0) for x in both) if b is None or (a.get("epoch") or {}).get("id") != (
            b.get("epoch") or {}).get("id") else b.get("raced", 0)  # fmt: skip
        w = a.get("write_wait_ms")
        wait = f"{w['p50']:g} / {w['p99']:g}" if w else "-"
        out.append(f"{name:<14}{when:>12}{c1:>10}{fmt(m1):>9}{a['verdict']:>18}{c2:>12}{fmt(m2):>9}{races:>7}"
                   f" {wait:>15}  {paths} / {noise} / {generated}")  # fmt: skip
    return out


def fmt(rate: float | None) -> str:
    """A match rate for the table."""
    return "-" if rate is None else f"{rate:.1%}"


def judge_clean(first: dict[str, Any], last: dict[str, Any], seen: Seen) -> list[str]:
    """What is wrong with an unplanted run: a route not READY in phase 1, ever NOT READY, or below
    99.9 % after the flip."""
    bad = [n for n, _, _ in ENDPOINTS if first.get(n, {}).get("verdict") != "READY"]
    low = [n for n, _, _ in ENDPOINTS if (m := rates(first.get(n), last.get(n, {"compared": 0,
           "differed": 0}))[1]) is not None and m < 0.999]  # fmt: skip
    out = []
    if bad:
        out.append(f"not READY at the end of phase 1: {bad}")
    if seen.not_ready:
        out.append(f"reported NOT READY during phase 1: {sorted(seen.not_ready)}")
    if low:
        out.append(f"below 99.9 % after the flip: {low}")
    return out


def judge_planted(plant: str, first: dict[str, Any]) -> list[str]:
    """What is wrong with a planted run: the planted route not NOT READY or not naming the path, or
    another route not READY."""
    route, path = PLANTS[plant]
    out = []
    r = first.get(route, {})
    if r.get("verdict") != "NOT READY":
        out.append(f"{plant}: {route} is {r.get('verdict')}, not NOT READY")
    elif path not in [p for p, _ in r.get("paths", [])]:
        out.append(f"{plant}: {route} is NOT READY but does not name {path} ({r.get('paths')})")
    others = [n for n, _, _ in ENDPOINTS if n != route and first.get(n, {}).get("verdict") != "READY"]
    if others:
        out.append(f"{plant}: other routes not READY: {others}")
    return out


def rehearse(tmp: Path, admin_url: str, redis_url: str, args: argparse.Namespace, plant: str) -> list[str]:
    """One rehearsal on its own database and Redis prefix: phase 1 on legacy, then (unplanted) the flip and
    phase 2. Prints the table; returns what is wrong (empty: the verdicts were right)."""
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(svc_setup.scratch_world(admin_url, redis_url, users=50, posts=200))
        fleet = Fleet(tmp)
        stack.callback(fleet.close)  # first out: the processes stop before their database is dropped
        secret = secrets.token_urlsafe(32)
        # Legacy's bcrypt at cost 12 costs ~0.3 s of CPU per register, login or user created (and the
        # dry run of a login on new as much again): on two cores that, not the gateway, would set the pace.
        # The rehearsal judges verdicts, not hashing: cost 4 (legacy/README.md, BCRYPT_COST).
        extra = {"DRY_RUN_SECRET": secret, "LOG_LEVEL": "error", "BCRYPT_COST": "4"}
        if plant:
            extra.update({"SERVICES_TEST_DIFF": plant, "SERVICES_TEST_MODE": "1"})
        services = svc_setup.start_services(fleet, world, extra)
        ports = {name: port for name, (port, _) in services.items()}
        routes = tmp / "routes.yaml"
        routes.write_text(routes_yaml(ports, "legacy", args.ready_min_s))
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": world.database_url,
               "STRANGLER_DRY_RUN_SECRET": secret, "STRANGLER_SHADOW_PREFIX": world.redis_prefix + "shadow:"}
        fleet.start("gateway", [str(STRANGLER), "proxy", "--routes", str(routes), "--listen", listen,
                                "--admin", admin, "--no-access-log", "--reload-interval", "0.5"],
                    env=env, port=int(listen.rsplit(":", 1)[1]), timeout=60)  # fmt: skip
        title = f"planted {plant}" if plant else "as the two implementations are"
        log(f"{title}; phase 1: every route on legacy, {args.seconds:g} s at ~{args.rate:g} req/s, "
            f"{args.users} users")
        client = Client(f"http://{listen}", args.users, args.rate, seed=1)
        seen = Seen()
        t0 = time.monotonic()
        def settled(reports: dict[str, Any]) -> bool:  # what phase 1 waits for (its checks, below)
            if plant:
                return not judge_planted(plant, reports)
            return all(reports.get(n, {}).get("verdict") == "READY" for n, _, _ in ENDPOINTS)

        asyncio.run(phase(client, admin, args.seconds, seen, t0, settled, args.max_seconds))
        time.sleep(2)  # let the last shadow jobs and counter flushes land (a report, not a test)
        first = report(admin)
        last = None
        if not plant:
            log("phase 2: every route flipped to new")
            routes.write_text(routes_yaml(ports, "new", args.ready_min_s))
            deadline = time.monotonic() + 30
            while json.loads(urllib.request.urlopen(f"http://{admin}/routes", timeout=5).read()).get(
                    "routes", [{}])[0].get("target") != "new":  # fmt: skip
                if time.monotonic() > deadline:
                    raise BenchError("the gateway did not reload the flipped routes within 30 s")
                time.sleep(0.2)
            asyncio.run(phase(client, admin, args.seconds, Seen(), t0))
            time.sleep(2)
            last = report(admin)
        if args.json:
            with open(args.json, "a") as out:
                out.write(json.dumps({"plant": plant, "phase1": first, "phase2": last}) + "\n")
        print(f"\n## {title}")
        for line in table(first, last, seen):
            print(line)
        for name, r in first.items():
            if r["verdict"] != "READY" and r.get("reasons"):
                print(f"  {name} (phase 1): {'; '.join(r['reasons'])}")
        for name, why in sorted(seen.not_ready.items()):
            print(f"  {name} was NOT READY during phase 1: {'; '.join(why)}")
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(client.load.by_status.items()))
        print(f"client: {client.load.sent} requests ({statuses})")
        return judge_planted(plant, first) if plant else judge_clean(first, last or {}, seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120, help="seconds of load per phase (default 120)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="phase 1 goes on past --seconds, up to this, until the verdicts are as expected")
    p.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    p.add_argument("--rate", type=float, default=230, help="requests per second, about (default 230)")
    p.add_argument("--plant", default="", choices=["", "all", *PLANTS],
                   help="SERVICES_TEST_DIFF of the new service (a planted difference; phase 1 only); "
                        "'all': the unplanted run, then each plant in turn")  # fmt: skip
    p.add_argument("--ready-min-s", type=float, default=None,
                   help="shadow.ready_min_s of every route (default: the repository's, 60 s)")
    p.add_argument("--json", default="", help="append each run's reports (phase 1, phase 2) to this file")
    p.add_argument("--check", action="store_true", help="exit 1 unless the verdicts are what they should be")
    args = p.parse_args(argv)
    runs = ["", *PLANTS] if args.plant == "all" else [args.plant]
    wrong: list[str] = []
    with tempfile.TemporaryDirectory(prefix="strangler-rehearsal-") as tmp:
        with svc_setup.servers(Path(tmp)) as (admin_url, redis_url):
            for i, plant in enumerate(runs):
                work = Path(tmp) / f"run{i}"
                work.mkdir()
                wrong += rehearse(work, admin_url, redis_url, args, plant)
    return verdict(wrong, args.check)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
