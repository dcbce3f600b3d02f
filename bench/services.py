"""Services benchmark: the new Python service against the legacy Node.js app, side by side.

Both run as one process on the same seeded database (10k users, 100k posts by default) and the same Redis.
Each endpoint is loaded at a fixed concurrency, interleaved legacy, new, legacy, new, ... so drifting
load on a shared machine hits both alike:

* ``GET /api/v1/users/{id}``   random seeded ids (bench/lua/users_random.lua)
* ``GET /api/v1/posts?limit=20``
* ``POST /api/v1/posts``       one authenticated user (bench/lua/posts_create.lua)
* ``POST /api/v1/auth/login``  random seeded users; password hashing is slow by design, so fewer
                               connections and longer runs (bench/lua/login.lua)
* ``GET /api/v1/posts/stream`` post events delivered per second to ``--subscribers`` open event
                               streams (bench/stream_fanout.py; ``--only stream`` runs just this)

Target on every endpoint: new >= 1.0x legacy throughput and new p99 <= legacy p99.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/services.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # (this file would shadow `services`)

from bench import stream_fanout, svc_setup
from bench.harness import BenchError, Fleet, cpu_times, ensure_apt_packages, log
from bench.report import Check, machine_state, spread, table, utc_now, write_json
from bench.wrk import Run, Summary, WrkParseError, paired_ratios, run_wrk

SERVICES = ("legacy", "new")


@dataclass(frozen=True)
class Endpoint:
    """One endpoint's load: path (or Lua script), connections, and a duration multiplier."""

    name: str
    path: str
    script: str | None = None
    connections: int | None = None  # None: --connections
    duration_factor: float = 1.0
    args: tuple[str, ...] = field(default=())


def endpoints(world: svc_setup.World, token: str, args: argparse.Namespace) -> list[Endpoint]:
    """The four endpoints under test, with the script arguments the seeded data calls for."""
    users = (str(world.first_user), str(world.last_user))
    found = [
        Endpoint("GET /api/v1/users/{id}", "/", "users_random.lua", args=users),
        Endpoint("GET /api/v1/posts?limit=20", "/api/v1/posts?limit=20"),
        Endpoint("POST /api/v1/posts", "/", "posts_create.lua", args=(token,)),
        Endpoint("POST /api/v1/auth/login", "/", "login.lua", connections=args.login_connections,
                 duration_factor=args.login_factor, args=("1", str(world.users), svc_setup.PASSWORD)),
    ]
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    return [e for e in found if not wanted or any(w in e.name for w in wanted)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per endpoint (default 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--login-connections", type=int, default=4, help="wrk connections for login (default 4)")
    p.add_argument("--login-factor", type=float, default=2.0, help="login runs last this many times longer")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per service and endpoint")
    p.add_argument("--users", type=int, default=10_000, help="seeded users (default 10000)")
    p.add_argument("--posts", type=int, default=100_000, help="seeded posts (default 100000)")
    p.add_argument("--only", default="", help="comma-separated substrings of endpoint names to run")
    p.add_argument("--subscribers", type=int, default=500, help="event streams of the fan-out (default 500)")
    p.add_argument("--events", type=int, default=200, help="events published per fan-out run (default 200)")
    p.add_argument("--no-compression", dest="compression", action="store_false",
                   help="send no Accept-Encoding (default: gzip, as browsers do, so responses over "
                        "the threshold are compressed by both services)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s, smaller data: for development")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup, args.login_factor = 3.0, 2, 1.0, 1.0
    if min(args.rounds, args.duration, args.connections, args.login_connections, args.users, args.posts) < 1:
        p.error("--rounds, --duration, --connections, --users and --posts must be positive")
    return args


def measure(endpoint: Endpoint, procs: dict[str, tuple[int, int]],
            args: argparse.Namespace) -> dict[str, Summary]:
    """Warm both services up on `endpoint`, then run legacy, new, legacy, new, ..."""
    conns = endpoint.connections or args.connections
    duration = args.duration * endpoint.duration_factor
    out = {name: Summary(f"{name}") for name in SERVICES}

    def once(name: str, seconds: float, measured: bool) -> Run:
        port, pid = procs[name]
        try:
            return run_wrk(f"http://127.0.0.1:{port}{endpoint.path}", connections=conns, duration=seconds,
                           script=endpoint.script, script_args=endpoint.args,
                           cpu_of=(lambda: cpu_times(pid)) if measured else None,
                           headers=("Accept-Encoding: gzip",) if args.compression else ())
        except WrkParseError as exc:
            raise BenchError(f"{endpoint.name} on {name}: {exc}") from exc

    for name in SERVICES:
        log(f"warm-up {endpoint.name} on {name}")
        once(name, args.warmup, measured=False)
    for rnd in range(args.rounds):
        for name in SERVICES:
            run = once(name, duration, measured=True)
            run.round = rnd
            out[name].runs.append(run)
            log(f"{endpoint.name} round {rnd + 1}/{args.rounds} {name:<6} {run.rps:8.0f} req/s  "
                f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  errors {run.errors}")
            time.sleep(0.5)
    return out


def checks(name: str, legacy: Summary, new: Summary) -> list[Check]:
    """new/legacy throughput >= 1.0 and new/legacy p99 <= 1.0 for one endpoint, plus error rates."""
    out = [
        Check(f"{name}: new/legacy req/s", new.rps_mean / legacy.rps_mean if legacy.rps_mean else None,
              ">=", 1.0, spread(paired_ratios(new, legacy, lambda r: r.rps))),
        Check(f"{name}: new/legacy p99", new.p99_ms / legacy.p99_ms if legacy.p99_ms else None,
              "<=", 1.0, spread(paired_ratios(new, legacy, lambda r: r.p99_ms))),
    ]
    for s in (legacy, new):
        if s.errors > s.requests * 0.001:
            out.append(Check(f"{name}: {s.name} error rate", min(1.0, s.errors / max(s.requests, 1)), "<=",
                             0.001, f"{s.errors} non-2xx or socket errors", unit="%"))
    return out


def fanout_report(fanout: dict[str, list[stream_fanout.FanoutRun]]) -> list[Check]:
    """Print the stream fan-out figures; new/legacy events per second >= 1.0."""
    print("\nGET /api/v1/posts/stream: events delivered per second (subscribers x events / seconds)")
    mean = {}
    for name, runs in fanout.items():
        mean[name] = sum(r.per_second for r in runs) / len(runs)
        print(f"  {name:<6} {mean[name]:10.0f} events/s  rounds: "
              + ", ".join(f"{r.per_second:.0f}" for r in runs)
              + f"  (client CPU {sum(r.client_cpu_s for r in runs) / len(runs):.2f} s per run)")
    ratio = mean["new"] / mean["legacy"] if mean.get("legacy") else None
    pairs = [n.per_second / o.per_second
             for n, o in zip(fanout["new"], fanout["legacy"], strict=True) if o.per_second]
    return [Check("GET /api/v1/posts/stream: new/legacy events/s", ratio, ">=", 1.0, spread(pairs))]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report; write the JSON file."""
    args = parse_args(argv)
    ensure_apt_packages({"wrk": "wrk"})
    started, load_before = utc_now(), machine_state()
    results: dict[str, dict[str, Summary]] = {}
    fanout: dict[str, list[stream_fanout.FanoutRun]] = {}
    with tempfile.TemporaryDirectory(prefix="strangler-bench-svc-") as tmp:
        with svc_setup.servers(Path(tmp)) as (pg_url, redis_url), \
                svc_setup.scratch_world(pg_url, redis_url, args.users, args.posts) as world:
            fleet = Fleet(Path(tmp))
            try:
                procs = svc_setup.start_services(fleet, world)
                token = svc_setup.login(procs["new"][0])
                for endpoint in endpoints(world, token, args):
                    results[endpoint.name] = measure(endpoint, procs, args)
                if not args.only or "stream" in args.only:
                    fanout = stream_fanout.measure_fanout(procs, world.redis_url, world.redis_prefix,
                                                          args.subscribers, args.events, args.rounds)
            finally:
                fleet.close()
    all_checks: list[Check] = []
    if fanout:
        all_checks += fanout_report(fanout)
    print(f"\nServices benchmark, {started}: {args.rounds} rounds x {args.duration:.0f} s per endpoint "
          f"(login x{args.login_factor:g}), wrk -t1 -c{args.connections} (login -c{args.login_connections}), "
          f"{args.users} users / {args.posts} posts;\np50/p99 are medians over rounds; CPU is the service "
          "process's user+system time per request.")
    for name, pair in results.items():
        print(f"\n{name}")
        print(table(pair[s] for s in SERVICES))
        legacy_cpu, new_cpu = pair["legacy"].cpu_us_per_request, pair["new"].cpu_us_per_request
        if legacy_cpu and new_cpu:
            print(f"  new uses {new_cpu / legacy_cpu:.2f}x legacy's CPU per request")
        all_checks += checks(name, pair["legacy"], pair["new"])
    print("\nTargets (ratio of means; per-round paired ratios in the detail):")
    for c in all_checks:
        print(c.line())
    payload: dict[str, Any] = {
        "benchmark": "services", "started": started, "finished": utc_now(),
        "settings": {k: getattr(args, k) for k in ("duration", "rounds", "connections", "login_connections",
                                                   "login_factor", "warmup", "users", "posts", "quick")},
        "machine_before": load_before, "machine_after": machine_state(),
        "endpoints": {name: {s: pair[s].to_json() for s in SERVICES} for name, pair in results.items()},
        "checks": [c.to_json() for c in all_checks],
        "stream_fanout": {name: [vars(r) | {"per_second": r.per_second} for r in runs]
                          for name, runs in fanout.items()},
    }
    print(f"\nJSON: {write_json('services', payload)}")
    return 1 if args.check and any(c.verdict == "FAIL" for c in all_checks) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/services.py: {exc}", file=sys.stderr)
        sys.exit(2)
