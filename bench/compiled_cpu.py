"""The gateway's CPU per request, compiled data path against pure Python, in-process (not a load test).

Starts `bench/upstream.py` and, alternately, `python -m proxy.cli proxy --workers 1` of this checkout
compiled and with ``STRANGLER_PURE_PYTHON=1`` (the same files: the variable makes `proxy.compiled` load
the ``.py`` sources). For each round and build, a fresh gateway gets a warm-up, then exactly ``--requests``
keep-alive GETs from ``--connections`` client connections (one request in flight per connection); the
figure is the gateway's own user+system CPU (``/proc``, supervisor and worker) over those requests.
CPU time depends much less on other load than throughput, so this runs on a busy machine too; it is not
`bench/gateway.py` (no nginx anchor, no throughput, no latency). With ``--shadow``, every GET is also
copied to a second upstream and compared (the diff store as `bench/gateway.py` sets it up: REDIS_URL and
DATABASE_URL or embedded servers, a scratch prefix and database, removed at the end). With ``--against
CHECKOUT``, the other build is that checkout's (built in place, e.g. a worktree of an earlier commit)
instead of the pure one: two commits compared the same careful way.

    .venv/bin/python -m bench.compiled_cpu --rounds 4 --requests 20000
    .venv/bin/python -m bench.compiled_cpu --rounds 6 --against /work/wt-base [--shadow]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.gw_targets import shadow_storage, start_upstreams, upstream_count
from bench.harness import (
    CLOCK_TICKS,
    ROOT,
    BenchError,
    Fleet,
    cpu_times,
    free_port,
    log,
    process_tree,
    rss_mib,
)

REQUEST = b"GET /api/v1/users/1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: compiled-cpu\r\n\r\n"


async def _client(port: int, count: int, vary: bool = False) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(count):
            # ``vary``: a header that changes with every request (as a trace id would), so that no request
            # repeats the last one's headers (the gateway's per-connection `PlainMemo` never applies).
            writer.write(REQUEST[:-2] + b"X-Trace: %d\r\n\r\n" % n if vary else REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response: {head[:200]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
    finally:
        writer.close()


async def drive(port: int, requests: int, connections: int, vary: bool = False) -> None:
    """``requests`` GETs over ``connections`` keep-alive connections, one in flight on each (``vary``: each
    with a header of its own)."""
    share, extra = divmod(requests, connections)
    await asyncio.gather(*(_client(port, share + (i < extra), vary) for i in range(connections)))


def measure(fleet: Fleet, tmp: Path, build: str, routes: str, env: dict[str, str],
            args: argparse.Namespace) -> tuple[float, float, float]:  # fmt: skip
    """One fresh gateway of ``build``: (CPU us per request, of which kernel, the worker's RSS MiB after)."""
    path = tmp / f"routes-{build}.yaml"
    path.write_text(routes)
    port, admin = free_port(), free_port()
    root = args.against if build == "against" else ROOT
    child_env = {**os.environ, **env, "PYTHONPATH": str(root)}
    child_env.pop("STRANGLER_PURE_PYTHON", None)
    if build == "pure":
        child_env["STRANGLER_PURE_PYTHON"] = "1"
    cmd = [sys.executable, "-m", "proxy.cli", "proxy", "--routes", str(path), "--listen", f"127.0.0.1:{port}",
           "--admin", f"127.0.0.1:{admin}", "--workers", "1", "--access-log", "off", "--log-level", "warning"]
    pid = fleet.start(f"gateway-{build}", cmd, env=child_env, cwd=root, port=port, timeout=60)
    try:
        asyncio.run(drive(port, args.warmup, args.connections))
        user0, sys0 = cpu_times(pid)
        asyncio.run(drive(port, args.requests, args.connections))
        user1, sys1 = cpu_times(pid)
        rss = rss_mib(process_tree(pid)[-1])  # the worker (the supervisor's one child)
    finally:
        fleet.stop(pid)
    total = (user1 - user0) + (sys1 - sys0)
    if total <= 0:  # /proc counts whole clock ticks: a round this short reads as no CPU at all
        raise BenchError(
            f"the {build} gateway's {args.requests} requests took less CPU than one clock tick "
            f"({1000 / CLOCK_TICKS:.0f} ms) to measure: ask for more --requests"
        )
    return total / args.requests * 1e6, (sys1 - sys0) / args.requests * 1e6, rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.compiled_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each measures both builds")
    parser.add_argument("--requests", type=int, default=20000, help="measured requests per build and round")
    parser.add_argument("--warmup", type=int, default=2000, help="unmeasured requests first")
    parser.add_argument("--connections", type=int, default=8, help="client keep-alive connections")
    parser.add_argument("--shadow", action="store_true", help="copy every GET to a second upstream")
    parser.add_argument("--against", type=Path, help="compare with this checkout's build, not pure Python")
    args = parser.parse_args(argv)
    first, second = ("compiled", "against") if args.against else ("compiled", "pure")
    figures: dict[str, list[tuple[float, float, float]]] = {first: [], second: []}
    copies = 0
    with tempfile.TemporaryDirectory(prefix="compiled-cpu-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = shadow_storage(stack, tmp) if args.shadow else {}
        fleet = Fleet(tmp)
        try:
            routes, other = start_upstreams(fleet, args.shadow)
            load = os.getloadavg()[0]
            started = time.monotonic()
            for round_no in range(args.rounds):
                order = (first, second) if round_no % 2 == 0 else (second, first)
                for build in order:
                    figures[build].append(measure(fleet, tmp, build, routes, env, args))
                    each, kernel_part, rss = figures[build][-1]
                    log(f"round {round_no + 1} {build}: {each:.1f} us/request CPU ({kernel_part:.1f} sys), "
                        f"worker RSS {rss:.1f} MiB")  # fmt: skip
            copies = upstream_count(other) if args.shadow else 0
        finally:
            fleet.close()
    print(f"\nload average at start {load:.2f}, end {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - started:.0f} s; {args.requests} requests x {args.rounds} rounds, "
          f"{args.connections} connections")  # fmt: skip
    if args.shadow:  # copies the shadow upstream answered, of every request sent (the rest were dropped)
        sent = (args.requests + args.warmup) * args.rounds * 2
        print(f"every GET shadowed: {copies} copies arrived of {sent} requests")
    for build, rows in figures.items():
        cpu, kernel = [r[0] for r in rows], statistics.mean(r[1] for r in rows)
        print(f"{build:9s} CPU us/request: mean {statistics.mean(cpu):.1f} "
              f"(rounds {min(cpu):.1f}-{max(cpu):.1f}), sys {kernel:.1f}, "
              f"worker RSS {statistics.mean(r[2] for r in rows):.1f} MiB")  # fmt: skip
    ratios = [c[0] / p[0] for c, p in zip(figures[first], figures[second], strict=True)]
    against = f"{args.against} (as built)" if args.against else "pure"
    print(f"compiled / {against} CPU per request: {statistics.mean(ratios):.2f}x "
          f"(per round {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/compiled_cpu.py: {exc}", file=sys.stderr)
        sys.exit(2)
