"""Wall-time properties the tests must not assert: measured here, checked against a bound only with --check.

`make test` checks what these paths do, in order of events; this script checks how long they take, on a
machine quiet enough to say (a loaded machine makes any of them fail, which is why they left the tests):

* refused upstream: a gateway whose upstream port is closed answers 502 far under its 5 s connect timeout
  (tests/server/test_server_failures.py `test_dead_port_502_quickly` checks the 502 and its cause);
* login side channel: per service, an unknown email and a wrong password take about as long, median
  ratio 0.5x-2x (tests/contract/test_contract_limits.py checks that they answer the same bytes);
* password hashing off the event loop: while 4 logins verify hashes, legacy's /health answers in under
  half the time of one login (tests/test_legacy_process.py checks that /health answers meanwhile).

    .venv/bin/python -m bench.timing            # print the figures (exit 0)
    .venv/bin/python -m bench.timing --check    # exit 1 when a figure is out of bounds
    make bench-timing BENCH_ARGS=--check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import svc_setup
from bench.harness import Fleet, free_port
from bench.report import Check
from proxy.routing.table import parse_routes
from proxy.server.gateway import Gateway
from proxy.server.listener import start_server

CONNECT_TIMEOUT = 5.0
ROUNDS = 10  # login pairs per service, interleaved so that load drifts affect both sides alike


async def _refused_once(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(b"GET /x HTTP/1.1\r\nHost: g\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    seconds = time.perf_counter() - started
    writer.close()
    if not head.startswith(b"HTTP/1.1 502"):
        raise RuntimeError(f"expected a 502 from a closed upstream port, got {head[:40]!r}")
    return seconds


async def refused_502() -> float:
    """Median seconds to a 502 from a gateway whose upstream port is closed (5 s connect timeout)."""
    dead = free_port()
    url = f"http://127.0.0.1:{dead}"
    text = (f'upstreams:\n  legacy: {{url: "{url}", connect_timeout: {CONNECT_TIMEOUT}}}\n'
            f'  new: {{url: "{url}"}}\ndefault: legacy\nroutes: []\n')  # fmt: skip
    gateway = Gateway(parse_routes(text, "bench-timing.yaml"))
    server = await start_server(gateway)
    try:
        return statistics.median([await _refused_once(server.port) for _ in range(5)])
    finally:
        await server.close()
        gateway.close()


def post_login(port: int, email: str, password: str) -> tuple[int, float]:
    """POST a login; (status, seconds)."""
    body = json.dumps({"email": email, "password": password}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    return status, time.perf_counter() - started


def register(port: int) -> str:
    """A new account on the service at `port` (its own password hash format); its email."""
    email = f"timing-{secrets.token_hex(4)}@bench.example"
    body = json.dumps({"email": email, "password": "pw-123456", "name": "Timing"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/register", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()
    return email


def side_channel(port: int) -> float:
    """Median seconds of unknown-email logins over those of wrong-password logins."""
    email = register(port)
    unknown: list[float] = []
    wrong: list[float] = []
    for _ in range(ROUNDS):
        for who, samples in ((f"ghost-{secrets.token_hex(4)}@bench.example", unknown), (email, wrong)):
            status, seconds = post_login(port, who, "wrong password!")
            if status != 401:
                raise RuntimeError(f"expected 401 for a failed login, got {status}")
            samples.append(seconds)
    return statistics.median(unknown) / statistics.median(wrong)


def health_during_logins(port: int) -> float:
    """Seconds of a /health answered while 4 logins hash, over the seconds of one login alone."""
    ghost = "nobody-hashing@bench.example"
    one_login = statistics.median(post_login(port, ghost, "not the password")[1] for _ in range(3))
    threads = [threading.Thread(target=post_login, args=(port, ghost, "not the password")) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(one_login / 4)  # the hashes are running now (a benchmark may sleep: it measures time)
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as resp:
        resp.read()
    health = time.perf_counter() - started
    for t in threads:
        t.join()
    return health / one_login


def measure() -> list[Check]:
    refused = asyncio.run(refused_502()) / CONNECT_TIMEOUT
    checks = [Check("refused upstream: 502 time / connect timeout", refused, "<=", 0.2,
                    f"connect_timeout {CONNECT_TIMEOUT:g}s")]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="strangler-bench-timing-") as tmp:
        with svc_setup.servers(Path(tmp)) as (pg_url, redis_url), \
                svc_setup.scratch_world(pg_url, redis_url, 1, 1) as world:  # fmt: skip
            fleet = Fleet(Path(tmp))
            try:
                procs = svc_setup.start_services(fleet, world)
                for name, (port, _pid) in procs.items():
                    ratio = side_channel(port)
                    detail = "median unknown-email / wrong-password login"
                    checks.append(Check(f"{name}: login side channel (low)", ratio, ">=", 0.5, detail))
                    checks.append(Check(f"{name}: login side channel (high)", ratio, "<=", 2.0, detail))
                checks.append(Check("legacy: /health during 4 logins / one login",
                                    health_during_logins(procs["legacy"][0]), "<=", 0.5,
                                    "password hashing off the event loop"))  # fmt: skip
            finally:
                fleet.close()
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.timing", description=__doc__.split("\n", 1)[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a figure is out of bounds")
    args = p.parse_args(argv)
    checks = measure()
    print("Wall-time properties (moved out of make test):")
    for c in checks:
        print(c.line())
    return 1 if args.check and any(c.verdict == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
