"""Forward-only SQL migrations: ``strangler migrate [--database-url URL] [--dir migrations]``.

Files are ``NNNN_name.sql``, applied in numeric order, each in its own transaction, all under one
PostgreSQL advisory lock (a second migrator waits, then finds nothing to do). Each applied file is
recorded in ``schema_migrations`` with its sha256; a file edited after it was applied is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

# Any fixed 64-bit key works; this one is "strangler" in ASCII, so it is recognisable in pg_locks.
LOCK_KEY = 0x737472616E676C65
_NAME_RE = re.compile(r"([0-9]{4,})_[A-Za-z0-9_.-]+\.sql")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
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


async def migrate(dsn: str, directory: Path) -> list[str]:
    """Apply the pending migrations of `directory` to `dsn`; return the names applied (in order)."""
    migrations = discover(Path(directory))
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        # Session-level lock: held across the per-file transactions, released below or on disconnect.
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            return await _apply(conn, migrations, Path(directory))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migrations: list[Migration], directory: Path) -> list[str]:
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
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
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
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


def main(argv: list[str] | None = None) -> int:
    """``strangler migrate``: apply pending migrations; 0 on success, 1 on failure, 2 on usage."""
    parser = argparse.ArgumentParser(
        prog="strangler migrate",
        description="Apply pending NNNN_*.sql migrations in order, each in a transaction, under an "
        "advisory lock; refuse files changed after they were applied.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.add_argument("--dir", type=Path, default=Path("migrations"), help="migrations directory")
    args = parser.parse_args(argv)
    if not args.database_url:
        print("strangler migrate: no database: set DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(migrate(args.database_url, args.dir))
    except MigrationError as exc:
        print(f"strangler migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(
            f"strangler migrate: cannot reach or use the database: {exc}; check --database-url "
            "(or DATABASE_URL) and that PostgreSQL is running",
            file=sys.stderr,
        )
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("up to date: no pending migrations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
