"""PostgreSQL access: the pool, the executor type repos take, and value formatting.

Repos never reach for the pool themselves: every repo function takes an :class:`Executor` from the
request (the FIFO-gated pool normally; one connection inside a transaction that is rolled back for a dry run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from services.fairpool import FairPool

log = logging.getLogger("services.db")

ConnectionInit = Callable[[asyncpg.Connection], Awaitable[None]]


class Executor(Protocol):
    """What a repo needs: asyncpg's query methods (a Pool and a Connection both provide them)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL round trip: this service never changes session state
    (no SET, LISTEN, cursors or advisory locks); asyncpg still rolls back an open transaction."""


async def create_pool(
    dsn: str, min_size: int, max_size: int, init: ConnectionInit | None = None
) -> asyncpg.Pool:
    """Open the service's pool; JIT is off because every query here is a small indexed lookup."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        reset=_no_session_reset,
        # A statement stuck this long is a fault, not load: fail the request instead of hanging it.
        command_timeout=30,
        server_settings={"jit": "off", "application_name": "strangler-services"},
    )
    return pool


async def close_pool(pool: asyncpg.Pool, deadline: float = 5.0) -> None:
    """Close gracefully within `deadline` seconds, else terminate (asyncpg's advice for shutdown)."""
    try:
        await asyncio.wait_for(pool.close(), deadline)
    except (TimeoutError, asyncio.CancelledError):
        pool.terminate()
        raise
    except Exception:  # a broken connection must not stop the rest of the cleanup
        log.exception("pool close failed; terminating")
        pool.terminate()


# What a PATCH sets updated_at to: now, but always at least 1 ms later than before, so it visibly
# changes even within one millisecond (timestamptz(3)); the legacy app uses the same expression.
BUMP_UPDATED_AT = "GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')"


def iso(column: str) -> str:
    """SQL for a timestamptz(3) column rendered like JavaScript's ``toISOString()``, named as the column.

    PostgreSQL formats it (``2026-11-21T06:04:00.123Z``), so rows arrive as ready strings: building and
    formatting datetime objects in Python was a quarter of the CPU of a 20-post page.
    """
    name = column.rpartition(".")[2]
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS {name}"


async def ping(db: Executor) -> None:
    """Raise unless PostgreSQL answers (readiness)."""
    await db.fetchval("SELECT 1")


@contextlib.asynccontextmanager
async def rolled_back(pool: FairPool) -> Any:
    """Yield one connection inside a transaction that is always rolled back (dry run); the connection
    is acquired through the FIFO gate like every other."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


def ids(values: Sequence[int]) -> list[int]:
    """Distinct ids in first-seen order, for an ``= ANY($1)`` parameter."""
    return list(dict.fromkeys(values))
