"""The gateway's own schema (strangler.*) and a database that is down when the gateway starts.

Real PostgreSQL throughout: bare databases (no application migrations), one created only after the
store opened, the example's migrations run as `strangler migrate` runs them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from support.waiting import eventually

from proxy.shadow.migrate_cli import main
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import Sample

ROOT = Path(__file__).resolve().parents[2]


def sample(n: int = 0) -> Sample:
    return Sample(
        route="r", signature="$.name", method="GET", path=f"/x/{n}", primary="legacy",
        control_status=200, candidate_status=200,
        diff=[{"path": "$.name", "kind": "changed", "control": "a", "candidate": "b"}],
    )  # fmt: skip


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    return {r["t"] for r in rows}


@pytest.fixture
def bare_db(make_database: Callable[..., str]) -> str:
    """An empty database (a sync fixture: make_database runs its own event loop)."""
    return make_database(migrated=False)


async def test_gateway_start_creates_its_own_schema_only(
    bare_db: str, redis_url: str, redis_prefix: str
) -> None:
    """Opening the gateway's store on a bare database creates strangler.* and nothing of the app's."""
    url = bare_db
    store = await RedisPgStore.connect_lenient(redis_url, url, redis_prefix)
    try:
        assert store.pg is not None
        store.sample("r", sample())
        await store.flush()
        assert [s.signature for s in await store.samples("r")] == ["$.name"]
    finally:
        await store.aclose()
    assert await tables(url) == {"strangler.shadow_diffs", "strangler.schema_migrations"}
    again = await RedisPgStore.connect_lenient(redis_url, url, redis_prefix)  # a restart: nothing to do
    await again.aclose()


def test_migrate_gateway_command(
    make_database: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`strangler migrate --gateway` applies the packaged set once; the example's set no longer keeps a
    public.shadow_diffs (0004 drops it); both histories stay apart."""
    url = make_database(migrated=False)
    assert main(["--database-url", url, "--gateway"]) == 0
    assert "applied 0001_shadow_diffs.sql" in capsys.readouterr().out
    assert main(["--database-url", url, "--gateway"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--database-url", url, "--dir", str(ROOT / "migrations")]) == 0
    found = asyncio.run(tables(url))
    assert "strangler.shadow_diffs" in found and "public.shadow_diffs" not in found
    assert {"public.users", "public.posts", "public.schema_migrations"} <= found


@pytest.fixture
async def later_database(pg_admin_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """(admin URL, URL and name of a database that does not exist yet); dropped at the end if made."""
    name = f"strangler_late_{secrets.token_hex(4)}"
    parts = urlsplit(pg_admin_url)  # the admin URL with another database (host, socket dir kept)
    yield pg_admin_url, urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, "")), name
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_database_down_at_start_is_retried(
    later_database: tuple[str, str, str], redis_url: str, redis_prefix: str
) -> None:
    """The database does not exist when the store opens: samples pause; once it is created, a later
    flush (after the backoff, on the injected clock) connects, applies the schema, and samples arrive."""
    admin, url, name = later_database
    now = [1000.0]
    store = await RedisPgStore.connect_lenient(redis_url, url, redis_prefix, clock=lambda: now[0])
    try:
        assert store.pg is None
        store.sample("r", sample(1))
        await store.flush()  # paused: dropped and counted
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

        async def stored() -> bool:
            now[0] += 61.0  # past any backoff
            store.sample("r", sample(int(time.time())))
            await store.flush()
            return store.pg is not None and bool(await store.samples("r"))

        await eventually(stored, what="samples stored once the database exists")
    finally:
        await store.aclose()
    assert "strangler.shadow_diffs" in await tables(url)
