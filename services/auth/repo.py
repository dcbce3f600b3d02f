"""SQL for refresh tokens (stored only as their sha256 hex)."""

from __future__ import annotations

from services.db import Executor


async def store_refresh(db: Executor, user_id: int, token_hash: str, ttl: int) -> None:
    """Remember a refresh token for `ttl` seconds."""
    await db.execute(
        "INSERT INTO refresh_tokens (user_id, token_hash, expires_at) "
        "VALUES ($1, $2, now() + make_interval(secs => $3))",
        user_id,
        token_hash,
        float(ttl),
    )


async def rotate(db: Executor, token_hash: str) -> int | None:
    """Revoke a live refresh token and return its user id; None if unknown, revoked or expired.

    One statement, so two concurrent refreshes with the same token cannot both succeed.
    """
    user_id: int | None = await db.fetchval(
        "UPDATE refresh_tokens SET revoked_at = now() "
        "WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING user_id",
        token_hash,
    )
    return user_id


async def revoke_all(db: Executor, user_id: int) -> None:
    """Revoke every live refresh token of the user (logout)."""
    await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
