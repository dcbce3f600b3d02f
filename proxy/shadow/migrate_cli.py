"""`strangler migrate`: an application's migrations (``--dir``, default ``migrations``) or, with
``--gateway``, the gateway's own tables (schema ``strangler``, shipped in the package). The engine is
`proxy.shadow.migrator`; this is its command line, available in a gateway-only install too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from proxy.shadow.migrator import MigrationError, migrate, migrate_gateway

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``strangler migrate``: apply pending migrations; 0 on success, 1 on failure, 2 on usage."""
    parser = argparse.ArgumentParser(
        prog="strangler migrate",
        description="Apply pending NNNN_*.sql migrations in order, each in a transaction, under an "
        "advisory lock; refuse files changed after they were applied. --gateway applies the gateway's "
        "own tables (schema strangler) instead, never touching the application's.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.add_argument("--dir", type=Path, default=Path("migrations"), help="migrations directory")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="apply the gateway's own migrations (shipped in the package; schema strangler) instead of --dir",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        print("strangler migrate: no database: set DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    try:
        if args.gateway:
            applied = asyncio.run(migrate_gateway(args.database_url))
        else:
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
