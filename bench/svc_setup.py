"""The services benchmark's world: PostgreSQL and Redis, a scratch database with seed data, both services.

PostgreSQL and Redis are the embedded ones (proxy/embedded.py) unless DATABASE_URL / REDIS_URL are set;
either way the benchmark works in a scratch database it creates and drops, and under a Redis key prefix
of its own that it deletes afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis

from bench.harness import ROOT, BenchError, Fleet, free_port, log, tail

PASSWORD = "bench-password-123"
EMAIL = "user{}@bench.example"


@dataclass(frozen=True)
class World:
    """Where the seeded data lives and what the load scripts need to know about it."""

    database_url: str
    redis_url: str
    redis_prefix: str
    first_user: int
    last_user: int
    users: int
    posts: int


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` (host, credentials and query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[tuple[str, str]]:
    """(admin PostgreSQL URL, Redis URL): from DATABASE_URL/REDIS_URL, else embedded ones stopped on exit."""
    from proxy.devstack.embedded import EmbeddedPostgres, EmbeddedRedis

    with contextlib.ExitStack() as stack:
        pg_url = os.environ.get("DATABASE_URL", "")
        if not pg_url:
            log("starting embedded PostgreSQL")
            pg = EmbeddedPostgres(tmp / "pg").start()
            stack.callback(pg.stop)
            pg_url = pg.url
        redis_url = os.environ.get("REDIS_URL", "")
        if not redis_url:
            log("starting embedded Redis")
            rd = EmbeddedRedis(tmp / "redis").start()
            stack.callback(rd.stop)
            redis_url = rd.url
        yield pg_url, redis_url


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of `admin_url`, migrated; dropped (WITH FORCE) on exit."""
    try:
        from services.migrate import migrate
    except ImportError as exc:
        raise BenchError(f"services.migrate is not available ({exc}): the new service is not built yet; "
                         "run `make install` on a checkout that has it") from None
    name = f"strangler_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        url = with_database(admin_url, name)
        asyncio.run(migrate(url, ROOT / "migrations"))
        yield url
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def scratch_prefix(redis_url: str, kind: str) -> Iterator[str]:
    """A Redis key prefix of this run's own; its keys are deleted on exit."""
    prefix = f"bench:{kind}:{secrets.token_hex(4)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        finally:
            client.close()


@contextlib.contextmanager
def scratch_world(admin_url: str, redis_url: str, users: int, posts: int) -> Iterator[World]:
    """A scratch database with seeded users and posts, and a scratch Redis prefix."""
    with scratch_database(admin_url) as url, scratch_prefix(redis_url, "svc") as prefix:
        log(f"seeding {users} users and {posts} posts")
        first, last = asyncio.run(_seed(url, users, posts))
        yield World(url, redis_url, prefix, first, last, users, posts)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _seed(url: str, users: int, posts: int) -> tuple[int, int]:
    """Insert users (one argon2id hash, computed once, shared by all) and posts spread over them."""
    from argon2 import PasswordHasher

    # The new service's parameters (docs/API.md); both services verify it, and the new service does
    # not rehash it, so logins leave the data as they found it.
    password_hash = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PASSWORD)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO users (email, name, password_hash) "
            "SELECT 'user' || g || '@bench.example', 'Bench User ' || g, $1 "
            "FROM generate_series(1, $2::int) g",
            password_hash, users)
        first, last = await conn.fetchrow("SELECT min(id), max(id) FROM users")
        await conn.execute(
            "INSERT INTO posts (author_id, title, body) "
            "SELECT $1::bigint + (g % $3::int), 'Post number ' || g, "
            "'Body of post ' || g || '. ' || repeat('Lorem ipsum dolor sit amet. ', 8) "
            "FROM generate_series(1, $2::int) g",
            first, posts, users)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return int(first), int(last)


def service_env(world: World, port: int, jwt_secret: str) -> dict[str, str]:
    """The same environment for both services (docs/API.md, Configuration), rate limits out of the way."""
    return {
        **os.environ,
        "DATABASE_URL": world.database_url, "REDIS_URL": world.redis_url, "REDIS_PREFIX": world.redis_prefix,
        "JWT_SECRET": jwt_secret, "HOST": "127.0.0.1", "PORT": str(port),
        "DB_POOL_MIN": "2", "DB_POOL_MAX": "10", "ACCESS_TOKEN_TTL": "86400",
        # The limiter would answer 429 within a second of load; the benchmark measures the login itself.
        "LOGIN_RATE_LIMIT_ACCOUNT": "1000000", "LOGIN_RATE_LIMIT_IP": "1000000",
        "LOG_LEVEL": "error", "NODE_ENV": "production",
    }


def service_command(name: str) -> list[str]:
    """How to start service ``name`` (legacy or new)."""
    if name == "legacy":
        return ["node", str(ROOT / "legacy" / "src" / "server.js")]
    return [sys.executable, "-m", "services"]


def start_service(fleet: Fleet, world: World, name: str, port: int, jwt_secret: str,
                  extra_env: dict[str, str] | None = None, log_name: str | None = None) -> int:
    """Start one service on ``port`` and wait until it is ready; its pid (a restart after a kill passes the
    same port and secret, and another ``log_name`` so the first log is kept)."""
    env = {**service_env(world, port, jwt_secret), **(extra_env or {})}
    log_name = log_name or name
    pid = fleet.start(log_name, service_command(name), env=env, port=port, timeout=60)
    wait_ready(port, name, fleet.workdir / f"{log_name}.log")
    return pid


def start_services(fleet: Fleet, world: World, extra_env: dict[str, str] | None = None,
                   jwt_secret: str | None = None) -> dict[str, tuple[int, int]]:
    """Start legacy and new, one process each; return {name: (port, pid)} once both are ready."""
    if not (ROOT / "legacy" / "node_modules").is_dir():
        raise BenchError("legacy/node_modules is missing: run `make install` (npm ci in legacy/) first")
    secret = jwt_secret or secrets.token_urlsafe(48)
    out: dict[str, tuple[int, int]] = {}
    for name in ("legacy", "new"):
        port = free_port()
        out[name] = (port, start_service(fleet, world, name, port, secret, extra_env))
    return out


def wait_ready(port: int, name: str, log_path: Path, timeout: float = 30.0) -> None:
    """Wait for GET /health/ready to answer 200 (database and Redis reachable)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"{name} is not ready after {timeout:.0f}s ({last}); log:\n{tail(log_path)}")


def login(port: int, user: int = 1) -> str:
    """An access token for seeded user `user` (valid on both services: they share JWT_SECRET)."""
    body = json.dumps({"email": EMAIL.format(user), "password": PASSWORD}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/login", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            token: str = json.loads(resp.read())["access_token"]
            return token
    except urllib.error.HTTPError as exc:
        raise BenchError(f"login as {EMAIL.format(user)} failed: {exc.code} {exc.read()[:300]!r}") from None
