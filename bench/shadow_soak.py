"""Shadow-storage soak: sustained shadowed load with ever-new diff signatures; is the storage bounded?

Starts two loopback upstreams (bench/soak_upstream.py: ``new`` differs from ``legacy`` on every answer,
half the time with a signature never seen before) and ``strangler proxy`` shadowing every request, with
Redis and a scratch PostgreSQL database (REDIS_URL / DATABASE_URL, else embedded; a scratch key prefix
and database, removed at the end). Drives ``--concurrency`` clients for ``--duration`` seconds and
samples, every ``--sample`` seconds: the gateway's RSS, Redis (the run's keys: hash fields and
``MEMORY USAGE``; and the instance's ``used_memory``, shared with anything else on it), and the
``strangler.shadow_diffs`` table (total relation size, live and dead rows). Reported: the first sample
after ``--warmup`` seconds against the last. All three should be flat after warm-up.

Loopback only, bounded in time; NOT part of ``make test``: ``make bench-shadow-soak``
(``BENCH_ARGS="--duration 120"`` for a shorter run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis

from bench.gw_targets import BENCH, shadow_storage, start_strangler
from bench.harness import Fleet, free_port, log, rss_mib
from bench.report import utc_now, write_json

ROUTES = """\
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
default: legacy
shadow: {{aa_sample: 0}}
routes:
  - name: items
    match: {{methods: [GET], path: "/items/{{id}}"}}
    target: legacy
    shadow: {{sample: 1.0}}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=480.0, help="seconds of load (default 480)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample (60)")
    p.add_argument("--sample", type=float, default=15.0, help="seconds between samples (default 15)")
    p.add_argument("--concurrency", type=int, default=16, help="clients in parallel (default 16)")
    return p.parse_args(argv)


def redis_figures(client: redis.Redis, prefix: str) -> dict[str, int]:
    """The run's keys (count, hash fields, bytes) and the instance's used_memory."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    fields = sum(int(client.hlen(k)) for k in keys if client.type(k) == b"hash")
    own = sum(int(client.memory_usage(k) or 0) for k in keys)
    used = int(client.info("memory")["used_memory"])
    return {"keys": len(keys), "hash_fields": fields, "keys_bytes": own, "used_memory": used}


async def pg_figures(url: str) -> dict[str, int]:
    """strangler.shadow_diffs: total relation size, live and dead rows."""
    conn = await asyncpg.connect(url)
    try:
        size = await conn.fetchval("SELECT pg_total_relation_size('strangler.shadow_diffs')")
        row = await conn.fetchrow(
            "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables"
            " WHERE schemaname = 'strangler' AND relname = 'shadow_diffs'"
        )
        rows = await conn.fetchval("SELECT count(*) FROM strangler.shadow_diffs")
    finally:
        await conn.close()
    return {"table_bytes": int(size), "rows": int(rows), "dead_rows": int(row["n_dead_tup"]) if row else 0}


async def drive(port: int, seconds: float, concurrency: int, counter: list[int]) -> None:
    """``concurrency`` clients sending GET /items/{n} until ``seconds`` have passed."""
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def client(k: int) -> None:
            n = k
            while time.monotonic() < end:
                async with session.get(f"http://127.0.0.1:{port}/items/{n}") as resp:
                    await resp.read()
                counter[0] += 1
                n += concurrency

        await asyncio.gather(*(client(k) for k in range(concurrency)))


async def soak(args: argparse.Namespace, port: int, pid: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """Load the gateway and sample the three figures; return the samples."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    counter = [0]
    samples: list[dict[str, Any]] = []
    load = asyncio.create_task(drive(port, args.duration, args.concurrency, counter))
    start = time.monotonic()
    try:
        while not load.done():
            await asyncio.wait([load], timeout=args.sample)
            figures = {
                "t_s": round(time.monotonic() - start, 1),
                "requests": counter[0],
                "gateway_rss_mib": rss_mib(pid),
                **{f"redis_{k}": v for k, v in redis_figures(client, env["STRANGLER_SHADOW_PREFIX"]).items()},
                **{f"pg_{k}": v for k, v in (await pg_figures(env["DATABASE_URL"])).items()},
            }
            samples.append(figures)
            log(" ".join(f"{k}={v}" for k, v in figures.items()))
        await load
    finally:
        client.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the start/end table; write bench/results/shadow-soak-*.json."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shadow-soak-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        fleet = Fleet(tmp)
        stack.callback(fleet.close)
        env = shadow_storage(stack, tmp)
        ports = {}
        for side in ("legacy", "new"):
            ports[side] = free_port()
            fleet.start(side, [sys.executable, str(BENCH / "soak_upstream.py"), str(ports[side]), side],
                        port=ports[side])  # fmt: skip
        port, pid = start_strangler(fleet, tmp, "strangler", ROUTES.format(**ports), env)
        samples = asyncio.run(soak(args, port, pid, env))
    base = next((s for s in samples if s["t_s"] >= args.warmup), samples[0])
    last = samples[-1]
    print(f"\nshadow-storage soak: {last['requests']} shadowed requests in {args.duration:g} s, "
          f"every one differing (half with a new signature)")  # fmt: skip
    print(f"{'figure':<22}{'after warm-up':>16}{'end':>16}")
    for key in ("gateway_rss_mib", "redis_hash_fields", "redis_keys_bytes", "redis_used_memory",
                "pg_table_bytes", "pg_rows", "pg_dead_rows"):  # fmt: skip
        print(f"{key:<22}{base[key]:>16}{last[key]:>16}")
    path = write_json("shadow-soak", {"at": utc_now(), "args": vars(args), "samples": samples})
    print(f"samples: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
