"""The gateway's user-space instructions per request, counted by callgrind (not a load test).

Starts `bench/upstream.py` and one ``python -m proxy.cli proxy --workers 1`` of a checkout under ``valgrind
--tool=callgrind``; sends ``--warmup`` keep-alive GETs, zeroes the counters (``callgrind_control -z``), sends
exactly ``--requests`` GETs over ``--connections`` connections (one in flight on each; one by default: with
several, how many requests one event-loop iteration handles varies from run to run, and the count with it, by
up to 8 %) and dumps (``callgrind_control -d``). The figure is the dump's instruction total divided by the
requests. Instructions do not depend on what else the machine runs, so this is the figure to compare builds by
on a shared machine; it says nothing about system calls or throughput. With ``--shadow`` every GET is copied
to a second upstream and compared, into the diff store as `bench/gateway.py` sets it up (REDIS_URL and
DATABASE_URL or embedded servers, scratch prefix and database). The store's periodic flush is pushed out to an
hour and A/A calls are off (`LAUNCH`). A second figure leaves out asyncio task steps (`task_instructions`):
with a store, the gateway's clock-paced background work moves the total by up to 10 % between runs.

    .venv/bin/python -m bench.callgrind --shadow --keep /tmp/cg   # then callgrind_annotate /tmp/cg/...
    .venv/bin/python -m bench.callgrind --checkout /tmp/base      # another checkout (built in place)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.compiled_cpu import drive
from bench.gw_targets import shadow_storage, start_upstreams, upstream_count
from bench.harness import ROOT, BenchError, Fleet, free_port, log

# Runs the gateway in this process (valgrind follows no children), the store's flush an hour apart and no
# A/A calls: both are paced by the clock (a flush every 0.5 s, at most 20 A/A calls a second per route), so
# under valgrind, ~50x slower, they would be spread over ~50x fewer requests than at full speed, and vary
# with the machine's load (A/A on 10 % of requests at ~150 requests a second is at its cap).
LAUNCH = (
    "import functools, sys\n"
    "import proxy.ops.serve as serve\n"
    "serve.Shadower = functools.partial(serve.Shadower, flush_interval=3600.0, aa_rate=0.0)\n"
    "from proxy.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def total_instructions(dump: Path) -> int:
    """The ``summary:`` (or ``totals:``) line of a callgrind dump: instructions executed."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"{dump}: no summary line")


def task_instructions(dump: Path) -> int | None:
    """Instructions spent in asyncio task steps (``callgrind_annotate``'s inclusive count of
    ``task_step_impl``), None without the tool. The data path runs in protocol callbacks, not tasks; what
    runs in tasks is the gateway's background work (the autopilot's stage sync every 0.25 s, the served
    counts' flush, Redis replies), paced by the clock and so spread over ~50x fewer requests under
    valgrind than at full speed, by as much as the run's wall time varies: 7,700 to 20,500 a request in
    three runs of one build."""
    if shutil.which("callgrind_annotate") is None:
        return None
    done = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    for line in done.stdout.splitlines():
        if "task_step_impl " in line:
            return int(line.split()[0].replace(",", ""))
    return 0


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120)


def measure(fleet: Fleet, tmp: Path, routes: str, env: dict[str, str], args: argparse.Namespace) -> int:
    """One gateway under callgrind: the instructions its measured requests executed (the dump's total)."""
    path = tmp / "routes.yaml"
    path.write_text(routes)
    port, admin = free_port(), free_port()
    out = tmp / "callgrind.out"
    child_env = {**os.environ, **env, "PYTHONPATH": str(args.checkout)}
    child_env.pop("STRANGLER_PURE_PYTHON", None)
    if not args.shadow:  # no store at all: a Redis URL alone opens the shadow sink, whose checks cost
        for name in ("REDIS_URL", "DATABASE_URL"):
            child_env.pop(name, None)
    if args.pure:
        child_env["STRANGLER_PURE_PYTHON"] = "1"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", LAUNCH,
           "proxy", "--routes", str(path), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
           "--workers", "1", "--access-log", "off", "--log-level", "warning"]  # fmt: skip
    pid = fleet.start("gateway", cmd, env=child_env, cwd=args.checkout, port=port, timeout=600)
    try:
        asyncio.run(drive(port, args.warmup, args.connections, args.vary))
        time.sleep(1.0)  # shadow copies of the warm-up still in flight land before the zero
        _control("-z", pid)
        asyncio.run(drive(port, args.requests, args.connections, args.vary))
        time.sleep(1.0)  # ... and those of the measured requests before the dump
        _control("-d", pid)
    finally:
        fleet.stop(pid, grace=60.0)
    dumps = sorted(tmp.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise BenchError("callgrind wrote no dump")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        for dump in dumps:
            shutil.copy(dump, args.keep / dump.name)
    total = total_instructions(dumps[0])
    tasks = task_instructions(dumps[0])
    if tasks is not None:
        args.tasks = tasks
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.callgrind", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured requests first")
    parser.add_argument("--connections", type=int, default=1, help="client keep-alive connections")
    parser.add_argument("--shadow", action="store_true", help="copy every GET to a second upstream")
    parser.add_argument("--pure", action="store_true", help="STRANGLER_PURE_PYTHON=1 (the .py sources)")
    parser.add_argument("--vary", action="store_true", help="a header that changes with every request")
    parser.add_argument("--express-head", action="store_true",
                        help="upstreams answer with an Express app's head: 7 headers, not 2")  # fmt: skip
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout to run (built in place)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps into this directory")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = shadow_storage(stack, tmp) if args.shadow else {}
        fleet = Fleet(tmp)
        try:
            routes, other = start_upstreams(fleet, args.shadow, args.express_head)
            before = upstream_count(other) if args.shadow else 0
            total = measure(fleet, tmp, routes, env, args)
            copies = upstream_count(other) - before if args.shadow else 0
        finally:
            fleet.close()
    log(f"{args.checkout} ({'pure' if args.pure else 'as built'}), "
        f"{'every GET shadowed' if args.shadow else 'unshadowed'}"
        f"{', a header of its own per request' if args.vary else ''}")  # fmt: skip
    if args.shadow:  # every request of the run (warm-up and measured) should have had its copy
        print(f"shadow copies: {copies} of {args.warmup + args.requests} requests")
    print(f"instructions per request: {total / args.requests:,.0f} ({total:,} over {args.requests} requests)")
    tasks = getattr(args, "tasks", None)
    if tasks is not None:  # the figure to compare builds by when background tasks ran (see task_instructions)
        print(f"outside asyncio tasks: {(total - tasks) / args.requests:,.0f} per request "
              f"(tasks: {tasks / args.requests:,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
