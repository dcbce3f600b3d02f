"""Real PostgreSQL and Redis for every test that needs them.

TEST_DATABASE_URL / TEST_REDIS_URL point the suite at running servers (an admin URL: the suite creates
and drops its own database there). Without them the suite starts the embedded ones, as on a fresh machine.
Every test that touches Redis gets its own key prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from proxy.devstack.embedded import EmbeddedPostgres, EmbeddedRedis

# In-process gateways in front of loopback upstreams, for the server, ops and upstream folders.
pytest_plugins = ("support.gateway_fixtures",)

ROOT = Path(__file__).resolve().parent.parent


def with_database(url: str, name: str) -> str:
    """Return `url` pointing at database `name` (keeps host, socket dir and query)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def _state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="strangler-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(_state_dir: Path) -> Iterator[str]:
    """A URL with rights to create databases: TEST_DATABASE_URL, or an embedded PostgreSQL."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(_state_dir / "pg").start()
    try:
        yield server.url
    finally:
        server.stop()


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[object]:
    """Factory: a new, migrated database; all of them are dropped at the end of the session."""
    from services.migrate import migrate, migrate_gateway

    created: list[str] = []

    def make(migrated: bool = True) -> str:
        name = f"strangler_t_{secrets.token_hex(4)}"
        asyncio.run(_create_database(pg_admin_url, name))
        created.append(name)
        url = with_database(pg_admin_url, name)
        if migrated:
            asyncio.run(migrate(url, ROOT / "migrations"))
            asyncio.run(migrate_gateway(url))  # the gateway's own tables (schema strangler)
        return url

    yield make
    for name in created:
        asyncio.run(_drop_database(pg_admin_url, name))


@pytest.fixture(scope="session")
def database_url(make_database) -> str:  # type: ignore[no-untyped-def]
    """One migrated database shared by the session's tests (tests use unique emails, not an empty table)."""
    url: str = make_database()
    return url


@pytest.fixture(scope="session")
def redis_url(_state_dir: Path) -> Iterator[str]:
    """TEST_REDIS_URL, or an embedded redis-server on a free loopback port."""
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    server = EmbeddedRedis(_state_dir / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"t:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
