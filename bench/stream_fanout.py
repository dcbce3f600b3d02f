"""The services benchmark's stream part: post events delivered per second to many subscribers.

Per service (interleaved legacy, new, ... over the rounds): open ``subscribers`` event streams straight
to the service, publish ``events`` post-sized events through Redis as fast as one client can (the
publish step of docs/API.md, Events), and time until every subscriber has every event. The figure is
subscribers x events / seconds. The subscribers run in this process (uvloop-free asyncio, counting
bytes only), so a very fast service can be limited by the client: the client's CPU time is reported.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass

import redis

from bench.harness import BenchError, log
from bench.stream_clients import SseLoad, close_all, open_many

PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'post', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""
# A typical post's 201 body (about 250 bytes).
POST = json.dumps({"id": 123456, "author_id": 42, "title": "A title of a benchmark post", "body": "b" * 120,
                   "created_at": "2026-12-06T15:40:13.123Z", "updated_at": "2026-12-06T15:40:13.123Z",
                   "author": {"id": 42, "name": "Bench Author"}}, separators=(",", ":")).encode()


@dataclass
class FanoutRun:
    """One measured fan-out."""

    service: str
    subscribers: int
    events: int
    seconds: float
    client_cpu_s: float

    @property
    def per_second(self) -> float:
        return self.subscribers * self.events / self.seconds if self.seconds else 0.0


def _open_streams(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/streams", timeout=10) as resp:
        return int(json.loads(resp.read())["sse_open"])


async def _until(check: object, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise BenchError(f"stream fan-out: {what} not reached within {within:.0f}s")
        await asyncio.sleep(0.05)


async def _fanout(name: str, port: int, redis_url: str, prefix: str, subscribers: int,
                  events: int) -> FanoutRun:
    clients = [SseLoad() for _ in range(subscribers)]
    await open_many(list(clients), port, "")
    try:
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(_open_streams, port) < subscribers:
            if time.monotonic() > deadline:
                raise BenchError("stream fan-out: the subscribers did not all open within 30s")
        client = redis.Redis.from_url(redis_url)
        cpu0, t0 = time.process_time(), time.monotonic()
        try:
            script = client.register_script(PUBLISH)
            for _ in range(events):
                await asyncio.to_thread(script, keys=[f"{prefix}posts:stream", f"{prefix}posts:live"],
                                        args=[10_000, POST])
        finally:
            client.close()
        await _until(lambda: all(c.c.events >= events for c in clients), "every event everywhere", 120)
        return FanoutRun(name, subscribers, events, time.monotonic() - t0, time.process_time() - cpu0)
    finally:
        await close_all(list(clients))


def measure_fanout(procs: dict[str, tuple[int, int]], redis_url: str, prefix: str, subscribers: int,
                   events: int, rounds: int) -> dict[str, list[FanoutRun]]:
    """Interleaved rounds of the fan-out on each service."""
    out: dict[str, list[FanoutRun]] = {name: [] for name in procs}
    for rnd in range(rounds):
        for name, (port, _pid) in procs.items():
            run = asyncio.run(_fanout(name, port, redis_url, prefix, subscribers, events))
            out[name].append(run)
            log(f"stream fan-out round {rnd + 1}/{rounds} {name:<6} {run.per_second:10.0f} events/s "
                f"({subscribers} subscribers x {events} events in {run.seconds:.2f} s, "
                f"client CPU {run.client_cpu_s:.2f} s)")
    return out
