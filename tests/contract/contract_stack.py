"""The session's service processes: how they are started, configured, awaited and stopped.

Both run against one migrated database and one Redis prefix with the same JWT secret, exactly as they
do behind the gateway, so tokens, rate limits and rows are shared between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis
from contract_kit import Account, Api
from support.waiting import eventually_sync

from proxy.devstack.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("legacy", "new")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Low login limits so the rate-limit tests stay short; every client sends its own X-Forwarded-For
# address (TRUSTED_HOPS=1), so the per-IP counter never leaks from one test into another.
LIMITS = {"LOGIN_RATE_LIMIT_ACCOUNT": 5, "LOGIN_RATE_LIMIT_IP": 8, "LOGIN_RATE_WINDOW": 300}


# CORS on, with credentials, for two origins (tests/contract/test_contract_http.py); compression at the
# default threshold; cacheable resources for 60 s.
ALLOWED_ORIGINS = ("https://app.example.com", "http://localhost:5173")
HTTP = {
    "CORS_ALLOWED_ORIGINS": ",".join(ALLOWED_ORIGINS), "CORS_ALLOW_CREDENTIALS": "true",
    "CORS_MAX_AGE": "600", "COMPRESSION_THRESHOLD": "1024", "CACHE_MAX_AGE": "60",
}

# A third, deliberately different new service: proves the differential test can see a difference.
MUTANT = "new-mutant"
MUTANT_ENV = {"SERVICES_TEST_MODE": "1", "SERVICES_TEST_DIFF": "user.name"}


def command(name: str) -> list[str]:
    """How each service is started (docs/API.md: configured by environment only)."""
    if name == "legacy":
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH: install Node.js 20+ to run the legacy service")
        return [node, str(ROOT / "legacy" / "src" / "server.js")]
    return [sys.executable, "-m", "services"]


@dataclass
class Running:
    """One started service process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def tail(self, limit: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError as exc:
            return f"(no log: {exc})"


@dataclass
class Stack:
    """The session's shared configuration and its (lazily started) service processes."""

    database_url: str
    redis_url: str
    log_dir: Path
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    dry_run_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    redis_prefix: str = field(default_factory=lambda: f"contract:{secrets.token_hex(4)}:")
    running: dict[str, Running] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)

    def env(self, name: str, port: int, metrics_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "REDIS_PREFIX": self.redis_prefix,
            "JWT_SECRET": self.jwt_secret, "HOST": "127.0.0.1", "PORT": str(port), "TRUSTED_HOPS": "1",
            "DB_POOL_MIN": "1", "DB_POOL_MAX": "5", "NODE_ENV": "production",
            "DRY_RUN_SECRET": self.dry_run_secret,  # read by the new service only
        })
        env.update({k: str(v) for k, v in LIMITS.items()})
        env.update(HTTP)
        env["METRICS_PORT"] = str(metrics_port)
        if name == MUTANT:
            env.update(MUTANT_ENV)
        return env

    def start(self, name: str) -> Running:
        """Start `name` if needed and wait until /health/ready answers 200."""
        if name in self.failed:  # do not retry a broken service for every test; report the first failure
            raise RuntimeError(self.failed[name])
        if name in self.running:
            return self.running[name]
        port, metrics_port = free_port(), free_port()
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(command(name), cwd=ROOT, env=self.env(name, port, metrics_port),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        run = Running(name, proc, port, log, metrics_port)
        self.running[name] = run
        try:
            return self._wait_ready(run)
        except RuntimeError as exc:
            self.failed[name] = str(exc)
            raise

    def _wait_ready(self, run: Running) -> Running:
        name, proc = run.name, run.proc
        answers = ["no answer"]

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} during start:\n{run.tail()}")
            r = httpx.get(f"{run.base_url}/health/ready", timeout=2.0)
            answers.append(f"{r.status_code} {r.text}")
            return r.status_code == 200

        try:
            eventually_sync(ready, what=f"{name} ready", within=START_TIMEOUT, ignore=(httpx.HTTPError,),
                            last=lambda: answers[-1])  # fmt: skip
        except AssertionError as exc:
            raise RuntimeError(f"{name} not ready: {exc}\n{run.tail()}") from None
        return run

    def stop(self) -> list[str]:
        """Terminate every process, kill those still alive after the deadline; return complaints."""
        problems = []
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for run in self.running.values():
            try:
                run.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
                problems.append(f"{run.name} ignored SIGTERM for {STOP_TIMEOUT}s and was killed")
        return problems

    @contextlib.contextmanager
    def variant(self, name: str, **changes: str) -> Iterator[Running]:
        """One more process of `name` with the session's environment changed by `changes` ('' unsets),
        answering /health (not necessarily ready: a test may point it at a dead Redis); stopped after."""
        port, metrics_port = free_port(), free_port()
        env = self.env(name, port, metrics_port)
        for key, value in changes.items():
            if value == "":
                env.pop(key, None)
            else:
                env[key] = value
        log = self.log_dir / f"{name}-variant-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(command(name), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        run = Running(name, proc, port, log, metrics_port)
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} during start:\n{run.tail()}")
            return httpx.get(f"{run.base_url}/health", timeout=2.0).status_code == 200

        try:
            try:
                eventually_sync(healthy, what=f"{name} /health", within=START_TIMEOUT,
                                ignore=(httpx.HTTPError,))  # fmt: skip
            except AssertionError as exc:
                raise RuntimeError(f"{name} gave no /health: {exc}\n{run.tail()}") from None
            yield run
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def api(self, name: str) -> Api:
        return Api(name, self.start(name).base_url)

    def shared_account(self, name: str) -> Account:
        """A user registered once per service for tests that only read or create their own posts."""
        if name not in self.accounts:
            api = self.api(name)
            try:
                self.accounts[name] = api.register(name="Shared Reader")
            finally:
                api.close()
        return self.accounts[name]

    # --- direct access to the shared stores, for assertions on rows and keys ---

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.database_url)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
            finally:
                await conn.close()
        return asyncio.run(run())

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def close(self) -> list[str]:
        """Stop every process and delete this stack's Redis keys; return the stop complaints."""
        problems = self.stop()
        client = self.redis()
        try:
            keys = list(client.scan_iter(match=self.redis_prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        return problems
