"""End to end: the real legacy app and new service behind a real `strangler proxy` process, shadowing on.

The new service runs with SERVICES_TEST_MODE=1 SERVICES_TEST_DIFF=user.name, so every user's name has a
"!" appended there: the report must name that route and the path ``$.name``. Identical endpoints report
100 % and READY; ``GET /health`` (its ``uptime_s`` changes on every call) is re-read when it differs, and
the re-read shows the data changed: raced, not a difference against new. Services
are started with the contract suite's process helpers (tests/contract/contract_stack.py).
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from support.waiting import eventually_sync

from proxy.devstack.embedded import free_port
from proxy.report.cli import main as report_main
from proxy.shadow.noise import MIN_AA_PAIRS
from proxy.shadow.store import bucket_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from contract_stack import ROOT, Stack  # the contract suite's launcher (not a package)

DRY_RUN_SECRET = secrets.token_hex(16)


class ShadowStack(Stack):
    """The contract Stack, with the new service in test mode (the known name difference) and dry run on."""

    _starting = ""

    def start(self, name: str) -> Any:
        self._starting = name
        return super().start(name)

    def env(self, *args: Any) -> dict[str, str]:
        # Stack.env is env(port) or env(name, port) depending on the contract suite's version.
        env: dict[str, str] = super().env(*args)
        name = args[0] if len(args) == 2 else self._starting
        # Open every pooled database connection at start: a connection opened mid-test costs ~100 ms on a
        # busy machine and would show up as a latency difference in the verdict.
        env["DB_POOL_MIN"] = env["DB_POOL_MAX"]
        if name == "new":
            env.update({"SERVICES_TEST_MODE": "1", "SERVICES_TEST_DIFF": "user.name",
                        "DRY_RUN_SECRET": DRY_RUN_SECRET})  # fmt: skip
        return env


def routes_text(legacy: int, new: int) -> str:
    return f"""\
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
default: legacy
shadow: {{aa_sample: 1.0, min_compared: 5, match_threshold: 0.99, timeout: 5.0, ready_min_s: 0,
         ready_min_count: 0}}
routes:
  - {{name: health, match: {{methods: [GET], path: /health}}, target: legacy, shadow: {{sample: 1.0}}}}
  - name: health-ready
    match: {{methods: [GET], path: /health/ready}}
    target: legacy
    shadow: {{sample: 1.0}}
  - name: users-get
    match: {{methods: [GET], path: "/api/v1/users/{{id}}"}}
    target: legacy
    shadow: {{sample: 1.0}}
  - name: users-write
    match: {{methods: [PATCH], path: "/api/v1/users/{{id}}"}}
    target: legacy
    shadow: {{sample: 1.0, writes: true}}
    compare: {{ignore: ["$.updated_at"]}}
  - name: auth-register
    match: {{methods: [POST], path: /api/v1/auth/register}}
    target: legacy
    shadow: {{sample: 1.0, writes: true}}
  - name: auth-logout
    match: {{methods: [POST], path: /api/v1/auth/logout}}
    target: legacy
    shadow: {{sample: 1.0, writes: true}}
"""


@dataclass
class Rig:
    """The running system: gateway URLs, the routes file, and the shared stores."""

    gateway: str
    admin: str
    routes: Path
    redis_url: str
    database_url: str
    prefix: str
    stack: ShadowStack

    def report(self, *extra: str) -> dict[str, Any]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["--routes", str(self.routes), "--redis-url", self.redis_url, "--database-url",
                self.database_url, "--prefix", self.prefix, "--format", "json", *extra]  # fmt: skip
        assert report_main(argv, out, err) == 0, err.getvalue()
        doc: dict[str, Any] = orjson.loads(out.getvalue())
        return doc


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def tail() -> str:
        return log.read_text(errors="replace")[-3000:]

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.returncode}:\n{tail()}")
        return httpx.get(url, timeout=1.0).status_code == 200

    eventually_sync(ready, what="the gateway ready", within=30, ignore=(httpx.HTTPError,), last=tail)


@pytest.fixture(scope="module")
def rig(make_database: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """legacy + new (test mode) + the gateway with shadowing, on free loopback ports."""
    tmp = tmp_path_factory.mktemp("shadow-e2e")
    stack = ShadowStack(database_url=make_database(), redis_url=redis_url, log_dir=tmp)
    gateway_proc = None
    prefix = f"t:shadow-e2e:{secrets.token_hex(4)}:"
    try:
        legacy, new = stack.start("legacy"), stack.start("new")
        routes = tmp / "routes.yaml"
        routes.write_text(routes_text(legacy.port, new.port))
        port, admin = free_port(), free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": stack.database_url,
               "STRANGLER_SHADOW_PREFIX": prefix, "DRY_RUN_SECRET": DRY_RUN_SECRET}  # fmt: skip
        log = tmp / "gateway.log"
        with log.open("wb") as out:
            gateway_proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "proxy", "--routes", str(routes),
                 "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--access-log", "false"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{admin}/readyz", gateway_proc, log)
        yield Rig(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", routes, redis_url,
                  stack.database_url, prefix, stack)  # fmt: skip
    finally:
        if gateway_proc is not None and gateway_proc.poll() is None:
            gateway_proc.send_signal(signal.SIGTERM)
            try:
                gateway_proc.wait(15)
            except subprocess.TimeoutExpired:
                gateway_proc.kill()
                gateway_proc.wait()
        stack.close()
        client = stack.redis()
        try:
            keys = list(client.scan_iter(match=prefix + "*"))  # the gateway's shadow counters
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def wait_compared(rig: Rig, want: dict[str, int]) -> dict[str, Any]:
    """Poll the report until each route has at least ``want`` comparisons (shadow work is asynchronous)."""
    seen: list[dict[str, Any]] = [{}]

    def compared() -> dict[str, Any] | None:
        seen.append({r["name"]: r for r in rig.report()["routes"]})
        routes = seen[-1]
        return routes if all(routes.get(n, {}).get("compared", 0) >= c for n, c in want.items()) else None

    routes: dict[str, Any] = eventually_sync(
        compared, what=f"comparisons {want}", within=20, interval=0.2, last=lambda: seen[-1]
    )
    return routes


def same_latency(rig: Rig, *routes: str) -> None:
    """Give both sides of ``routes`` one histogram (8 calls of 2 ms) in the shared store.

    The verdict's latency rule (tests/report/test_report.py) would otherwise compare the live speed of
    Node and Python on a machine whose load decides it; the other rules still see the real traffic.
    """
    client = redis.Redis.from_url(rig.redis_url)
    try:
        for route in routes:
            for side in ("control", "candidate"):
                key = f"{rig.prefix}lat:{route}:{side}"  # proxy/shadow/redis_counters.py's layout
                client.delete(key)
                client.hset(key, str(bucket_of(0.002)), 8)
    finally:
        client.close()


def test_report_names_route_path_races_and_ready(rig: Rig) -> None:
    """Traffic through the gateway shows up: $.name differs on users-get (legacy re-read: unchanged),
    /health/ready is READY at 100 %, and /health's uptime_s changed on the re-read: raced, not differed."""
    with httpx.Client(base_url=rig.gateway, timeout=10) as client:
        email = f"e2e-{secrets.token_hex(4)}@example.com"
        r = client.post(
            "/api/v1/auth/register", json={"email": email, "password": "pw-123456", "name": "Eve"}
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["user"]["id"]
        for _ in range(8):
            r = client.get(f"/api/v1/users/{user_id}")
            assert r.status_code == 200 and r.json()["name"] == "Eve"  # legacy serves: no "!"
            assert client.get("/health").status_code == 200
            assert client.get("/health/ready").status_code == 200
    wait_compared(rig, {"users-get": 8, "health-ready": 8})
    eventually_sync(
        lambda: (h := {r["name"]: r for r in rig.report()["routes"]}["health"])["compared"] + h["raced"] >= 8,
        what="8 /health comparisons or races", within=20, interval=0.2,
    )  # fmt: skip
    same_latency(rig, "health", "health-ready")
    routes = {r["name"]: r for r in rig.report()["routes"]}
    users = routes["users-get"]
    assert [p for p, _ in users["paths"]] == ["$.name"] and users["match_rate"] == 0.0
    if users["verdict"] != "NOT READY":  # judged once the A/A pairs (re-reads count) can tell noise apart
        assert users["verdict"] == "NOT ENOUGH DATA" and "learning what is noise" in users["reasons"][0]
        with httpx.Client(base_url=rig.gateway, timeout=10) as client:
            for _ in range(MIN_AA_PAIRS + 4):
                assert client.get(f"/api/v1/users/{user_id}").status_code == 200
        eventually_sync(
            lambda: {r["name"]: r for r in rig.report()["routes"]}["users-get"]["verdict"] == "NOT READY",
            what="users-get NOT READY", within=20, interval=0.5,
        )  # fmt: skip
    ready = routes["health-ready"]
    assert (ready["match_rate"], ready["verdict"]) == (1.0, "READY"), (ready["reasons"], ready["latency_ms"])
    health = routes["health"]
    # A re-read landing in the same millisecond as the primary could see no change: then uptime_s counts.
    assert health["raced"] >= 1 and [m["method"] for m in health["methods"]] == ["GET"]
    assert {p for p, _ in health["paths"]} <= {"$.uptime_s"}
    assert routes["users-get"]["raced"] == 0
    one = rig.report("--route", "users-get")["routes"][0]
    assert one["examples"] and one["examples"][0]["diff"][0]["candidate"] == "Eve!"


def test_write_shadowed_as_dry_run_changes_nothing(rig: Rig) -> None:
    """A PATCH is applied by legacy only; new answers it as a dry run; the database keeps legacy's write."""
    with httpx.Client(base_url=rig.gateway, timeout=10) as client:
        email = f"w-{secrets.token_hex(4)}@example.com"
        r = client.post(
            "/api/v1/auth/register", json={"email": email, "password": "pw-123456", "name": "Wes"}
        )
        assert r.status_code == 201, r.text
        user_id, token = r.json()["user"]["id"], r.json()["tokens"]["access_token"]
        r = client.patch(
            f"/api/v1/users/{user_id}", json={"name": "Wes2"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200 and r.json()["name"] == "Wes2"
    routes = wait_compared(rig, {"users-write": 1})
    assert routes["users-write"]["paths"] == [["$.name", 1]]  # only the test-mode "!", not a 403
    example = rig.report("--route", "users-write")["routes"][0]["examples"][0]
    assert (example["control_status"], example["candidate_status"]) == (200, 200)
    rows = rig.stack.query("SELECT name FROM users WHERE id = $1", user_id)
    assert [row["name"] for row in rows] == ["Wes2"]


def test_writes_are_dry_run_against_the_state_legacy_saw(rig: Rig) -> None:
    """Register and logout, each dry-run on new before legacy applies it: new answers 201 and 204 as
    legacy does (after the fact it would say 409 and 401), logout matches, and only legacy's writes
    remain (one user, the token revoked). The writes' wait for the dry run is reported."""
    with httpx.Client(base_url=rig.gateway, timeout=10) as client:
        email = f"pre-{secrets.token_hex(4)}@example.com"
        body = {"email": email, "password": "pw-123456", "name": "Pam"}
        r = client.post("/api/v1/auth/register", json=body)
        assert r.status_code == 201, r.text
        auth = {"Authorization": f"Bearer {r.json()['tokens']['access_token']}"}
        assert client.post("/api/v1/auth/logout", headers=auth).status_code == 204
        assert client.get("/api/v1/auth/me", headers=auth).status_code == 401  # legacy's logout happened
    routes = wait_compared(rig, {"auth-register": 1, "auth-logout": 1})
    logout = routes["auth-logout"]
    assert (logout["match_rate"], logout["counters"].get("not_compared", 0)) == (1.0, 0)
    assert logout["write_wait_ms"]["count"] >= 1
    examples = rig.report("--route", "auth-register")["routes"][0]["examples"]
    assert examples  # new's test mode appends "!" to names: register differs, but not in its status
    assert all((e["control_status"], e["candidate_status"]) == (201, 201) for e in examples)
    assert len(rig.stack.query("SELECT id FROM users WHERE email = $1", email)) == 1


def test_admin_report_page_from_the_gateway(rig: Rig) -> None:
    """The gateway's admin port serves the same report (JSON and HTML) from the shared stores."""
    def report() -> dict[str, Any] | None:
        r = httpx.get(rig.admin + "/report.json", timeout=10)
        assert r.status_code == 200, r.text
        names = {x["name"]: x for x in r.json()["routes"]}
        return names if names.get("users-get", {}).get("compared", 0) > 0 else None

    names: dict[str, Any] = eventually_sync(report, what="a users-get comparison", within=20, interval=0.2)
    assert "$.name" in [p for p, _ in names["users-get"]["paths"]]
    page = httpx.get(rig.admin + "/report", timeout=10)
    assert page.status_code == 200 and 'data-route="users-get"' in page.text and "<svg" in page.text
