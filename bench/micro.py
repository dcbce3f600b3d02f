"""Hot-path micro-benchmarks: the per-request costs that tests must not assert on.

Tests check what these paths do; this script checks how long they take, where a slow or shared machine
is expected to be noisy. Each figure is the best of five batches (the least disturbed one), per call:

* access line: the gateway's hook, an AccessRecord then the buffered JSON line (to /dev/null);
* metrics observe: what the gateway calls per request, RequestStats().requests.observe() (compiled with
  the data path), with its cells already cached;
* shadow submit, queue full: Shadower.submit() when the bounded queue is full, so it drops and counts.

    .venv/bin/python -m bench.micro            # print the figures (exit 0)
    .venv/bin/python -m bench.micro --check    # exit 1 when a figure is above its bound
    make bench-micro BENCH_ARGS=--check
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.ops.accesslog import AccessLog
from proxy.ops.metrics import RequestStats
from proxy.routing.table import CompareRules, Route, ShadowSettings, ShadowSpec
from proxy.server.exchange import Exchange
from proxy.server.gateway import AccessRecord
from proxy.shadow.admission import Shadower

# The in-memory store is a test double (tests/support/memstore.py): the full-queue case never stores.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.memstore import MemoryStore

BATCHES = 5


@dataclass(frozen=True)
class Figure:
    """One measured cost per call, against the bound the old unit test asserted."""

    name: str
    seconds: float
    bound: float

    @property
    def verdict(self) -> str:
        return "PASS" if self.seconds < self.bound else "FAIL"

    def line(self) -> str:
        us, bound_us = self.seconds * 1e6, self.bound * 1e6
        return f"  {self.name:<28} {us:10.3f} µs/call  bound < {bound_us:g} µs  {self.verdict}"


def best_per_call(batch: Callable[[int], None], n: int) -> float:
    """The fastest of BATCHES runs of ``batch(n)``, divided by n."""
    best = float("inf")
    for _ in range(BATCHES):
        start = time.perf_counter()
        batch(n)
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def access_line(n: int) -> float:
    """An AccessRecord built and logged per call (AccessLog needs a running loop for its timer)."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        log = AccessLog(fd)

        def batch(count: int) -> None:
            for _ in range(count):
                log(AccessRecord("0123456789abcdef0123456789abcdef", "GET", "/items/9", "items", "new",
                                 200, 0.00123, 0, 321, "127.0.0.1"))  # fmt: skip

        cost = best_per_call(batch, n)
        log.close()
        return cost
    finally:
        os.close(fd)


def metrics_observe(n: int) -> float:
    observe = RequestStats().requests.observe  # the gateway's observer (proxy.ops.serve.build_gateway)
    keys = [("users-get", "new", 200), ("users-get", "legacy", 200), ("default", "legacy", 404)]

    def batch(count: int) -> None:
        for i in range(count):
            route, target, status = keys[i % 3]
            observe(route, target, status, 0.0031)

    return best_per_call(batch, n)


def shadow_submit_full(n: int) -> float:
    # Not started, so nothing drains: after two queued jobs every submission is dropped and counted.
    shadower = Shadower(ShadowSettings(queue=2, concurrency=1), {}, MemoryStore())
    route = Route("q", frozenset({"GET"}), "/q", "legacy", ShadowSpec(1.0, False, 1.0), CompareRules(), 1)
    ex = Exchange(route, "GET", "/q", "", [], b"", "legacy", 200, [], b"{}", 0.001, b"rid")

    def batch(count: int) -> None:
        for _ in range(count):
            shadower.submit(ex)

    return best_per_call(batch, n)


def measure(n: int) -> list[Figure]:
    # Bounds are those the unit tests asserted before they moved here (the submit one was 10 in 50 ms).
    return [
        Figure("access line", asyncio.run(access_line(n)), 5e-6),
        Figure("metrics observe", metrics_observe(n), 2e-6),
        Figure("shadow submit, queue full", shadow_submit_full(n), 5e-3),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 when a figure is above its bound")
    p.add_argument("--calls", type=int, default=20000, help="calls per batch (default 20000)")
    args = p.parse_args(argv)
    figures = measure(args.calls)
    print(f"micro-benchmarks: best of {BATCHES} batches of {args.calls} calls")
    for figure in figures:
        print(figure.line())
    return 1 if args.check and any(f.verdict == "FAIL" for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
