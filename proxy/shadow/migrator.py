"""Forward-only SQL migrations, the engine of `strangler migrate` and of the gateway's own schema.

Files are ``NNNN_name.sql``, applied in numeric order, each in its own transaction, all under one
PostgreSQL advisory lock (a second migrator waits, then finds nothing to do). Each applied file is
recorded in a history table with its sha256; a file edited after it was applied is refused.

Two sets use it: an application's (the example's ``migrations/``, history ``schema_migrations``) and the
gateway's own (``proxy/shadow/schema/``, package data: schema ``strangler``, history
``strangler.schema_migrations``, a lock of its own), which the gateway applies when it opens its diff
store (``proxy.shadow.redis_pg``) and ``strangler migrate --gateway`` applies by hand. Does I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

__all__ = [
    "GATEWAY_DIR", "GATEWAY_HISTORY", "GATEWAY_LOCK_KEY", "LOCK_KEY", "Migration", "MigrationError",
    "discover", "migrate", "migrate_gateway", "migrate_gateway_on", "migrate_on",
]  # fmt: skip

# Any fixed 64-bit key works; this one is "strangler" in ASCII, so it is recognisable in pg_locks.
LOCK_KEY = 0x737472616E676C65
_NAME_RE = re.compile(r"([0-9]{4,})_[A-Za-z0-9_.-]+\.sql")

GATEWAY_LOCK_KEY = LOCK_KEY + 1  # the gateway's set never waits for an application's migrator
GATEWAY_DIR = Path(__file__).resolve().parent / "schema"  # package data (pyproject.toml)
GATEWAY_HISTORY = "strangler.schema_migrations"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {history} (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """A migration cannot be applied; the message names the file and what to do."""


@dataclass(frozen=True)
class Migration:
    """One SQL file on disk."""

    version: int
    name: str
    sql: str
    checksum: str


def discover(directory: Path) -> list[Migration]:
    """The ``*.sql`` files of `directory` in version order; refuse bad names and duplicate versions."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist; pass --dir")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME_RE.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_description.sql")
        data = path.read_bytes()
        checksum = hashlib.sha256(data).hexdigest()
        migration = Migration(int(match[1]), path.name, data.decode("utf-8"), checksum)
        if migration.version in found:
            raise MigrationError(
                f"{path}: version {migration.version} is also used by "
                f"{found[migration.version].name}; give each file its own number"
            )
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


async def migrate(
    dsn: str, directory: Path, *, history: str = "schema_migrations", lock_key: int = LOCK_KEY
) -> list[str]:
    """Apply the pending migrations of `directory` to `dsn`; return the names applied (in order).

    ``history`` is the table recording them (schema-qualified for a set of its own), ``lock_key`` the
    advisory lock that serialises migrators of the same set.
    """
    migrations = discover(Path(directory))
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await migrate_on(conn, migrations, Path(directory), history=history, lock_key=lock_key)
    finally:
        await conn.close()


async def migrate_gateway(dsn: str) -> list[str]:
    """Apply the gateway's own migration set (schema ``strangler``); the application's tables are
    never touched."""
    return await migrate(dsn, GATEWAY_DIR, history=GATEWAY_HISTORY, lock_key=GATEWAY_LOCK_KEY)


async def migrate_gateway_on(conn: asyncpg.Connection) -> list[str]:
    """`migrate_gateway` on an open connection (the gateway's store uses one of its pool's)."""
    return await migrate_on(
        conn, discover(GATEWAY_DIR), GATEWAY_DIR, history=GATEWAY_HISTORY, lock_key=GATEWAY_LOCK_KEY
    )


async def migrate_on(
    conn: asyncpg.Connection, migrations: list[Migration], directory: Path, *, history: str, lock_key: int
) -> list[str]:
    """`migrate` on an open connection."""
    # Session-level lock: held across the per-file transactions, released below or on disconnect.
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        return await _apply(conn, migrations, directory, history)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)


async def _apply(
    conn: asyncpg.Connection, migrations: list[Migration], directory: Path, history: str
) -> list[str]:
    if "." in history:  # a set of its own lives in its own schema, which must exist before its history
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {history.split('.')[0]}")
    await conn.execute(_CREATE_TABLE.format(history=history))
    rows = await conn.fetch(f"SELECT version, name, checksum FROM {history}")
    applied = {row["version"]: (row["name"], row["checksum"]) for row in rows}
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded[1] != migration.checksum:
            raise MigrationError(
                f"{directory / migration.name}: changed after it was applied (checksum "
                f"{migration.checksum[:12]}... differs from the recorded {recorded[1][:12]}...); "
                "migrations are forward-only: restore the file and add a new numbered migration instead"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {history} (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"{directory / migration.name}: failed and was rolled back: {type(exc).__name__}: {exc}"
            ) from exc
        done.append(migration.name)
    return done
