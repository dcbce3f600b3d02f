"""Stream soak: thousands of open event streams and WebSockets through the gateway, on each service.

For each service in turn (the gateway's default route pointing at it): open ``--streams`` event streams
and ``--sockets`` WebSockets through ``strangler proxy``, hold them ``--hold`` seconds while one post
event per second is published, and sample the service's and the gateway's RSS every ``--sample``
seconds. Then reset every client and check that the service's gauges return to zero (no leaked
stream or socket) and how far RSS falls back. Reported per service:

* RSS over time (service and gateway), and after the clients went away against before they came;
* heartbeats on time: every stream's longest gap between heartbeats, every socket's between pings,
  against the configured interval (+2 s of slack for a loaded two-core machine);
* events: each client should have received every event published while it was open;
* cleanup: seconds until ``/health/streams`` shows no open stream or socket.

Loopback only, bounded in count and time; NOT part of ``make test``: ``make bench-soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import redis

from bench import svc_setup
from bench.gw_targets import start_strangler
from bench.harness import BenchError, Fleet, log, rss_mib
from bench.report import utc_now, write_json
from bench.stream_clients import SseLoad, WsLoad, close_all, open_many

SLACK_S = 2.0
PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'post', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=2000, help="event streams per service (default 2000)")
    p.add_argument("--sockets", type=int, default=2000, help="WebSockets per service (default 2000)")
    p.add_argument("--hold", type=float, default=180.0, help="seconds to hold them open (default 180)")
    p.add_argument("--heartbeat", type=int, default=5, help="STREAM_HEARTBEAT_S and WS_PING_S (default 5)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    p.add_argument("--only", default="legacy,new", help="services to soak, comma-separated")
    p.add_argument("--quick", action="store_true", help="300 + 300 clients for 30 s: checks the soak works")
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.sockets, args.hold, args.sample = 300, 300, 30.0, 5.0
    if min(args.streams, args.sockets) < 0 or args.streams + args.sockets > 8000 or args.hold > 900:
        p.error("at most 8000 clients and 900 s per service")
    return args


def gauges(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/streams", timeout=10) as resp:
        data: dict[str, int] = json.loads(resp.read())
        return data


async def wait_gauges(port: int, check: Any, within: float) -> float:
    """Seconds until ``check(gauges)`` holds; BenchError after `within`."""
    started = time.monotonic()
    while not check(await asyncio.to_thread(gauges, port)):
        if time.monotonic() - started > within:
            last = await asyncio.to_thread(gauges, port)
            raise BenchError(f"gauges {last} never matched within {within:.0f}s")
        await asyncio.sleep(0.2)
    return round(time.monotonic() - started, 2)


async def soak_one(side: str, svc: tuple[int, int], gw: tuple[int, int], world: svc_setup.World, token: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    """One service's soak; the figures of the report."""
    (svc_port, svc_pid), (gw_port, gw_pid) = svc, gw
    rss_before = {"service": rss_mib(svc_pid), "gateway": rss_mib(gw_pid)}
    streams = [SseLoad() for _ in range(args.streams)]
    sockets = [WsLoad() for _ in range(args.sockets)]
    clients: list[SseLoad | WsLoad] = [*streams, *sockets]
    log(f"{side}: opening {args.streams} streams and {args.sockets} sockets through the gateway")
    opened = time.monotonic()
    await open_many(clients, gw_port, token)
    await wait_gauges(svc_port, lambda g: g["sse_open"] >= args.streams and g["ws_open"] >= args.sockets, 60)
    open_s = round(time.monotonic() - opened, 2)
    samples, published = [], 0
    client = redis.Redis.from_url(world.redis_url)
    try:
        started = time.monotonic()
        next_sample = started
        while (elapsed := time.monotonic() - started) < args.hold:
            client.eval(PUBLISH, 2, f"{world.redis_prefix}posts:stream", f"{world.redis_prefix}posts:live",
                        1000, b'{"soak":' + str(published).encode() + b"}")
            published += 1
            if time.monotonic() >= next_sample:
                samples.append({"t": round(elapsed, 1), "service_rss": rss_mib(svc_pid),
                                "gateway_rss": rss_mib(gw_pid), **await asyncio.to_thread(gauges, svc_port)})
                log(f"{side}: {samples[-1]}")
                next_sample += args.sample
            await asyncio.sleep(1.0)  # one event per second: a pace, not a wait for a condition
    finally:
        client.close()
    try:  # the last events in flight: wait for every open client to have them all, within a deadline
        async with asyncio.timeout(args.heartbeat + SLACK_S + 10):
            while not all(c.c.events >= published or c.c.closed for c in clients):  # noqa: ASYNC110  (polls counters)
                await asyncio.sleep(0.2)
    except TimeoutError:
        pass  # counted below as clients that missed events
    now = time.monotonic()
    for c in clients:  # the gap still open at the end counts too
        c.c.max_gap = max(c.c.max_gap, now - c.c.last_beat)
    late_beats = sum(1 for s in streams if s.c.max_gap > args.heartbeat + SLACK_S or s.c.beats == 0)
    late_pings = sum(1 for s in sockets if s.c.max_gap > args.heartbeat + SLACK_S or s.c.beats == 0)
    missing = sum(1 for c in clients if c.c.events < published)
    closed_early = sum(1 for c in clients if c.c.closed)
    peak = {"service": max(s["service_rss"] for s in samples),
            "gateway": max(s["gateway_rss"] for s in samples)}
    log(f"{side}: resetting every client")
    await close_all(clients)
    cleanup_s = await wait_gauges(svc_port, lambda g: g["sse_open"] == 0 and g["ws_open"] == 0, 60)
    await asyncio.sleep(5.0)  # let the allocators settle before the after-RSS reading
    rss_after = {"service": rss_mib(svc_pid), "gateway": rss_mib(gw_pid)}
    # Allocators keep freed memory, so "after < peak" proves little: a leak shows as growth from one
    # full open/close cycle to the next. A second cycle, the same size, without the hold.
    log(f"{side}: second open/close cycle (leak check)")
    again: list[SseLoad | WsLoad] = [*(SseLoad() for _ in streams), *(WsLoad() for _ in sockets)]
    await open_many(again, gw_port, token)
    await wait_gauges(svc_port, lambda g: g["sse_open"] >= args.streams and g["ws_open"] >= args.sockets, 60)
    await close_all(again)
    await wait_gauges(svc_port, lambda g: g["sse_open"] == 0 and g["ws_open"] == 0, 60)
    await asyncio.sleep(5.0)
    return {
        "service": side, "streams": args.streams, "sockets": args.sockets, "hold_s": args.hold,
        "heartbeat_s": args.heartbeat, "open_s": open_s, "events_published": published,
        "clients_missing_events": missing, "clients_closed_early": closed_early,
        "streams_heartbeat_late": late_beats, "sockets_ping_late": late_pings,
        "max_heartbeat_gap_s": round(max((s.c.max_gap for s in streams), default=0.0), 2),
        "max_ping_gap_s": round(max((s.c.max_gap for s in sockets), default=0.0), 2),
        "rss_before_mib": rss_before, "rss_peak_mib": peak,
        "rss_after_mib": rss_after,
        "rss_after_second_cycle_mib": {"service": rss_mib(svc_pid), "gateway": rss_mib(gw_pid)},
        "cleanup_s": cleanup_s, "gauges_after": await asyncio.to_thread(gauges, svc_port), "samples": samples,
    }


def report(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n{r['service']}: {r['streams']} streams + {r['sockets']} sockets through the gateway for "
              f"{r['hold_s']:.0f} s (heartbeat/ping every {r['heartbeat_s']} s), opened in {r['open_s']} s")
        print("   t(s)  service RSS  gateway RSS  sse_open  ws_open")
        for s in r["samples"]:
            print(f"  {s['t']:5.0f}  {s['service_rss']:8.1f} MiB {s['gateway_rss']:8.1f} MiB "
                  f"{s['sse_open']:8d} {s['ws_open']:8d}")
        before, peak, after = r["rss_before_mib"], r["rss_peak_mib"], r["rss_after_mib"]
        print(f"  RSS service {before['service']} -> peak {peak['service']} -> after {after['service']} MiB; "
              f"gateway {before['gateway']} -> peak {peak['gateway']} -> after {after['gateway']} MiB")
        again = r["rss_after_second_cycle_mib"]
        print(f"  leak check: RSS after a second open/close cycle: service {again['service']} MiB "
              f"({again['service'] - after['service']:+.1f}), gateway {again['gateway']} MiB "
              f"({again['gateway'] - after['gateway']:+.1f})")
        print(f"  heartbeats late: {r['streams_heartbeat_late']}/{r['streams']} streams "
              f"(max gap {r['max_heartbeat_gap_s']} s), {r['sockets_ping_late']}/{r['sockets']} sockets "
              f"(max ping gap {r['max_ping_gap_s']} s)")
        print(f"  events: {r['events_published']} published, "
              f"{r['clients_missing_events']} clients missed some, {r['clients_closed_early']} closed early")
        print(f"  cleanup: gauges at zero {r['cleanup_s']} s after the reset: {r['gauges_after']}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the report; write the JSON file."""
    args = parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    started = utc_now()
    results = []
    extra = {"STREAM_HEARTBEAT_S": str(args.heartbeat), "WS_PING_S": str(args.heartbeat)}
    with tempfile.TemporaryDirectory(prefix="strangler-bench-soak-") as tmp:
        with svc_setup.servers(Path(tmp)) as (pg_url, redis_url), \
                svc_setup.scratch_world(pg_url, redis_url, 10, 10) as world:
            fleet = Fleet(Path(tmp))
            try:
                procs = svc_setup.start_services(fleet, world, extra)
                token = svc_setup.login(procs["new"][0])
                for side in wanted:
                    routes = "upstreams:\n" + "".join(
                        f'  {n}: {{url: "http://127.0.0.1:{procs[n][0]}", timeout: 30.0, pool_size: 64}}\n'
                        for n in ("legacy", "new")) + f"default: {side}\nroutes: []\n"
                    gw = start_strangler(fleet, Path(tmp), f"gateway-{side}", routes, {})
                    try:
                        results.append(asyncio.run(soak_one(side, procs[side], gw, world, token, args)))
                    finally:
                        fleet.stop(gw[1])
            finally:
                fleet.close()
    report(results)
    payload = {"benchmark": "soak", "started": started, "finished": utc_now(), "results": results}
    print(f"\nJSON: {write_json('soak', payload)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/soak.py: {exc}", file=sys.stderr)
        sys.exit(2)
