"""The legacy Node.js process as an operator meets it: start-up validation, readiness, logs, shutdown.

The API itself is covered by tests/contract; these tests start `node legacy/src/server.js` for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import httpx
import pytest
import redis
from support.waiting import eventually_sync

from proxy.devstack.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "legacy" / "src" / "server.js"
SECRET = "s" * 32


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise RuntimeError("node is not on PATH: install Node.js 20+ (the legacy service needs it)")
    return path


def base_env(**overrides: str) -> dict[str, str]:
    """A complete, valid environment pointing at closed ports, with `overrides` applied ('' deletes)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "JWT_SECRET"}}
    env.update({
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "JWT_SECRET": SECRET, "HOST": "127.0.0.1", "PORT": str(free_port()),
    })
    for key, value in overrides.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Legacy:
    """A running legacy process with its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.proc = subprocess.Popen([node(), str(SERVER)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"legacy exited during start: {self.lines}")
            return any('"msg":"listening"' in line for line in self.lines)

        eventually_sync(listening, what="legacy listening", within=15, last=lambda: self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def dead_deps() -> Iterator[Legacy]:
    """Legacy started against a PostgreSQL and a Redis that are not there."""
    app = Legacy(base_env())
    yield app
    app.stop()


@pytest.fixture
def live(database_url: str, redis_url: str, redis_prefix: str) -> Iterator[Legacy]:
    """Legacy on the session's migrated database and this test's Redis prefix."""
    app = Legacy(base_env(DATABASE_URL=database_url, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix))
    yield app
    app.stop()


@pytest.mark.parametrize(("overrides", "named"), [
    ({"DATABASE_URL": ""}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://x@127.0.0.1/db"}, "DATABASE_URL"),
    ({"REDIS_URL": ""}, "REDIS_URL"),
    ({"JWT_SECRET": "short"}, "JWT_SECRET"),
    ({"PORT": "80a"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"DB_POOL_MIN": "5", "DB_POOL_MAX": "2"}, "DB_POOL_MIN"),
    ({"TRUSTED_HOPS": "-1"}, "TRUSTED_HOPS"),
    ({"ACCESS_TOKEN_TTL": "0"}, "ACCESS_TOKEN_TTL"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"OPENAPI_PATH": "/nonexistent/openapi.json"}, "OPENAPI_PATH"),
    ({"CORS_ALLOWED_ORIGINS": "https://app.example.com/path"}, "CORS_ALLOWED_ORIGINS"),
    ({"CORS_ALLOWED_ORIGINS": "*,https://app.example.com"}, "CORS_ALLOWED_ORIGINS"),
    ({"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"}, "CORS_ALLOW_CREDENTIALS"),
    ({"CORS_ALLOW_CREDENTIALS": "yes"}, "CORS_ALLOW_CREDENTIALS"),
    ({"CORS_MAX_AGE": "-1"}, "CORS_MAX_AGE"),
    ({"COMPRESSION_THRESHOLD": "big"}, "COMPRESSION_THRESHOLD"),
    ({"CACHE_MAX_AGE": "-5"}, "CACHE_MAX_AGE"),
    ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
])
def test_bad_configuration_exits_2_naming_the_variable(overrides: dict[str, str], named: str) -> None:
    """A missing or bad variable stops the process at start with status 2 and a message naming it."""
    result = subprocess.run([node(), str(SERVER)], env=base_env(**overrides), capture_output=True,
                            timeout=20, check=False)
    assert result.returncode == 2, result
    assert named in result.stderr.decode(), result.stderr
    assert result.stdout == b""


def test_readiness_reports_each_failing_dependency(dead_deps: Legacy) -> None:
    """/health stays 200 while /health/ready answers 503 naming both failing checks."""
    assert httpx.get(f"{dead_deps.url}/health").status_code == 200
    # The checks' 2 s budget keeps readiness from hanging; the client timeout is only the hang guard.
    r = httpx.get(f"{dead_deps.url}/health/ready", timeout=10)
    assert r.status_code == 503
    body = r.json()
    assert list(body) == ["status", "checks"] and body["status"] == "failing"
    assert list(body["checks"]) == ["database", "redis"]
    assert all(value.startswith("failing: ") for value in body["checks"].values()), body


def test_one_json_log_line_per_request_with_its_id(dead_deps: Legacy) -> None:
    """Each request is logged once as JSON carrying the request id that the response echoes."""
    def logged(request_id: str) -> list[dict[str, object]]:
        return [rec for rec in dead_deps.records() if rec.get("request_id") == request_id]

    with httpx.Client(base_url=dead_deps.url) as client:
        r = client.get("/nope", headers={"X-Request-Id": "trace-me-42"})
        assert r.headers["x-request-id"] == "trace-me-42"
        # A later request's line comes after any second line for the first one would have.
        client.get("/nope", headers={"X-Request-Id": "the-next-one"})
    eventually_sync(lambda: logged("the-next-one"), what="the next line", last=lambda: dead_deps.lines)
    mine = logged("trace-me-42")
    assert len(mine) == 1
    assert mine[0]["msg"] == "request" and mine[0]["status"] == 404 and mine[0]["path"] == "/nope"


def test_health_answers_while_logins_verify_hashes(live: Legacy) -> None:
    """/health answers 200 while four logins verify password hashes, and each login still gets its 401.

    That /health does not wait for the hashes (they run off the event loop) is a matter of time:
    bench/timing.py measures it (under half a login); a loaded machine decides it, so it is not here.
    """
    body = {"email": "nobody-hashing@example.com", "password": "not the password"}
    results: list[int] = []

    def login() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            results.append(c.post("/api/v1/auth/login", json=body).status_code)

    threads = [threading.Thread(target=login) for _ in range(4)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=live.url, timeout=30) as client:
        assert client.get("/health").status_code == 200
    for t in threads:
        t.join()
    assert results == [401] * 4


@contextlib.contextmanager
def users_locked(database_url: str) -> Iterator[None]:
    """Hold an exclusive lock on the users table (from a thread of its own) until the block ends: a
    login then waits in its user lookup for as long as the test wants."""
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finally:
            await conn.close()

    holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    holder.start()
    try:
        eventually_sync(locked.is_set, what="the users table locked")
        yield
    finally:
        release.set()
        holder.join(10)


def test_sigterm_finishes_in_flight_requests_and_exits_0(
    live: Legacy, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    """SIGTERM lets a running request finish on its keep-alive connection, then the process exits 0.

    The login is held in its user lookup (the users table locked) until the shutdown has begun. Exit 0,
    not the 10 s shutdown deadline's exit 1, shows that nothing else held the process.
    """
    idle = httpx.Client(base_url=live.url, timeout=30)
    busy = httpx.Client(base_url=live.url, timeout=30)
    email = "nobody-term@example.com"
    limit_key = f"{redis_prefix}rl:login:acct:{hashlib.sha256(email.encode()).hexdigest()}"
    store = redis.Redis.from_url(redis_url)
    try:
        assert idle.get("/health").status_code == 200  # a pooled, idle keep-alive connection
        statuses: list[int] = []
        body = {"email": email, "password": "whatever!"}
        login = threading.Thread(
            target=lambda: statuses.append(busy.post("/api/v1/auth/login", json=body).status_code))
        with users_locked(database_url):
            login.start()
            # Counted by the rate limiter: the login is in its handler, next in the (locked) user lookup.
            eventually_sync(lambda: store.exists(limit_key), what="the login in flight")
            live.proc.send_signal(signal.SIGTERM)
            eventually_sync(lambda: any('"msg":"shutting down"' in line for line in live.lines),
                            what="the shutdown begun", last=lambda: live.lines[-5:])  # fmt: skip
            assert live.proc.poll() is None and not statuses  # the login holds the process
        login.join(15)
        assert live.proc.wait(15) == 0
        assert statuses == [401]
        assert any('"msg":"stopped"' in line for line in live.lines)
    finally:
        store.close()
        idle.close()
        busy.close()
