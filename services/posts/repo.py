"""SQL for posts. Every statement is parameterised; authors of a page come from one ``= ANY($1)`` query."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from services import errors
from services.db import BUMP_UPDATED_AT, Executor, ids, iso
from services.posts.models import COLUMNS

_WITH_AUTHOR = (
    f"SELECT p.id, p.author_id, p.title, p.body, {iso('p.created_at')}, {iso('p.updated_at')}, "
    "u.name AS author_name FROM p JOIN users u ON u.id = p.author_id"
)
# INSERT ... RETURNING cannot name another table, so the author row is a CTE joined to the result.
_CREATE = (
    "WITH a AS (SELECT id, name FROM users WHERE id = $1), "
    "p AS (INSERT INTO posts (author_id, title, body) SELECT id, $2, $3 FROM a RETURNING *) "
    f"SELECT p.id, p.author_id, p.title, p.body, {iso('p.created_at')}, {iso('p.updated_at')}, "
    "a.name AS author_name FROM p CROSS JOIN a"
)


async def create(db: Executor, author_id: int, title: str, body: str) -> Any:
    """Insert a post by an existing author and return its row with ``author_name``, in ONE statement.

    The author that does not exist (deleted, or deleted meanwhile: the foreign key) is Unauthorized,
    since its token died with it.
    """
    try:
        row = await db.fetchrow(_CREATE, author_id, title, body)
    except asyncpg.ForeignKeyViolationError:
        raise errors.Unauthorized() from None
    if row is None:
        raise errors.Unauthorized()
    return row


async def get(db: Executor, post_id: int) -> Any:
    """The post with ``author_name``, or None."""
    return await db.fetchrow(f"WITH p AS (SELECT * FROM posts WHERE id = $1) {_WITH_AUTHOR}", post_id)


async def author_of(db: Executor, post_id: int) -> int | None:
    """The post's author id, or None when there is no such post."""
    author: int | None = await db.fetchval("SELECT author_id FROM posts WHERE id = $1", post_id)
    return author


async def update(db: Executor, post_id: int, title: str | None, body: str | None) -> Any:
    """Change the given columns (None keeps the value), bump updated_at; the row with author, or None."""
    return await db.fetchrow(
        "WITH p AS (UPDATE posts SET title = COALESCE($2, title), body = COALESCE($3, body), "
        f"updated_at = {BUMP_UPDATED_AT} WHERE id = $1 RETURNING *) " + _WITH_AUTHOR,
        post_id,
        title,
        body,
    )


async def delete(db: Executor, post_id: int) -> bool:
    """Delete the post; False if there was none."""
    return await db.execute("DELETE FROM posts WHERE id = $1", post_id) != "DELETE 0"


async def page(db: Executor, limit: int, offset: int, author_id: int | None = None) -> list[Any]:
    """Up to `limit` posts by id descending from `offset`, optionally of one author (no author names)."""
    if author_id is None:
        return await db.fetch(
            f"SELECT {COLUMNS} FROM posts ORDER BY id DESC LIMIT $1 OFFSET $2", limit, offset
        )
    return await db.fetch(
        f"SELECT {COLUMNS} FROM posts WHERE author_id = $3 ORDER BY id DESC LIMIT $1 OFFSET $2",
        limit,
        offset,
        author_id,
    )


_PAGE = "SELECT * FROM posts ORDER BY id DESC LIMIT $1 OFFSET $2"
_AUTHOR_PAGE = "SELECT * FROM posts WHERE author_id = $3 ORDER BY id DESC LIMIT $1 OFFSET $2"


async def page_with_authors(db: Executor, limit: int, offset: int, author_id: int | None = None) -> list[Any]:
    """Like :func:`page`, each row with ``author_name``, in ONE statement: the page and its authors come
    from one snapshot, so an author deleted meanwhile takes its posts with it (never a null author)."""
    if author_id is None:
        return await db.fetch(f"WITH p AS ({_PAGE}) {_WITH_AUTHOR} ORDER BY p.id DESC", limit, offset)
    return await db.fetch(
        f"WITH p AS ({_AUTHOR_PAGE}) {_WITH_AUTHOR} ORDER BY p.id DESC", limit, offset, author_id
    )


async def author_names(db: Executor, rows: list[Any]) -> dict[int, str]:
    """Names of the authors of `rows`, in ONE query (never one per row)."""
    if not rows:
        return {}
    found = await db.fetch(
        "SELECT id, name FROM users WHERE id = ANY($1::bigint[])", ids([row["author_id"] for row in rows])
    )
    return {row["id"]: row["name"] for row in found}
