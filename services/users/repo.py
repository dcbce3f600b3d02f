"""SQL for users. Every statement is parameterised; emails arrive lowercased."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from services import errors
from services.db import BUMP_UPDATED_AT, Executor
from services.users.models import COLUMNS


async def create(db: Executor, email: str, name: str, password_hash: str) -> Any:
    """Insert a user and return its row; Conflict when the email is taken."""
    try:
        return await db.fetchrow(
            f"INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING {COLUMNS}",
            email,
            name,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise errors.Conflict() from None


async def get(db: Executor, user_id: int) -> Any:
    """The user's row, or None."""
    return await db.fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1", user_id)


async def exists(db: Executor, user_id: int) -> bool:
    """True when the user exists."""
    found: bool = await db.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id)
    return found


async def page(db: Executor, limit: int, offset: int) -> list[Any]:
    """Up to `limit` users by id ascending, starting at `offset`."""
    return await db.fetch(f"SELECT {COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2", limit, offset)


async def update(
    db: Executor, user_id: int, name: str | None, email: str | None, password_hash: str | None
) -> Any:
    """Change the given columns (None keeps the value), bump updated_at; Conflict on a taken email."""
    try:
        return await db.fetchrow(
            f"UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), "
            f"password_hash = COALESCE($4, password_hash), updated_at = {BUMP_UPDATED_AT} "
            f"WHERE id = $1 RETURNING {COLUMNS}",
            user_id,
            name,
            email,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise errors.Conflict() from None


async def delete(db: Executor, user_id: int) -> bool:
    """Delete the user (posts and refresh tokens cascade); False if there was none."""
    status = await db.execute("DELETE FROM users WHERE id = $1", user_id)
    return status != "DELETE 0"


async def credentials(db: Executor, email: str) -> Any:
    """``(id, password_hash)`` for a login, or None."""
    return await db.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", email)


async def upgrade_hash(db: Executor, user_id: int, old_hash: str, new_hash: str) -> None:
    """Replace a bcrypt hash with argon2id, unless the hash changed meanwhile (a password change)."""
    await db.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        user_id,
        old_hash,
        new_hash,
    )
