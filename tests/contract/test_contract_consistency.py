"""A page of posts and its authors come from one snapshot (both services): never `"author":null`.

The race (an author deleted between the page query and the authors query) is made deterministic with a
real lock: the test holds ACCESS EXCLUSIVE on `users`, sends the list request, waits until the service's
statement that reads `users` is seen waiting on that lock (pg_stat_activity), deletes the author and
commits. A service that read the page before touching `users` then finds no author for a post it
already has; one that reads both in one statement sees the author and its posts gone together.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from contract_kit import Api, assert_json
from contract_stack import Stack
from support.waiting import eventually

WAIT_DEADLINE = 15.0  # for the lock waiter to appear: a loaded machine starts the request slowly


async def _wait_for_lock_waiter(conn: asyncpg.Connection) -> None:
    """Wait until some backend waits for a lock on `users` (the service's statement that reads it).

    pg_locks, not pg_stat_activity: a statement blocked while being parsed still shows the previous query.
    """

    async def waiting() -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return count

    await eventually(waiting, what="the list request waiting for the users table", within=WAIT_DEADLINE,
                     interval=0.02)  # fmt: skip


async def _list_while_author_is_deleted(stack: Stack, api: Api, path: str, author_id: int) -> Any:
    conn = await asyncpg.connect(stack.database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        pending = asyncio.ensure_future(asyncio.to_thread(api.get, path))
        try:
            await _wait_for_lock_waiter(conn)
            await conn.execute("DELETE FROM users WHERE id = $1", author_id)  # its posts cascade
            await tx.commit()
        except BaseException:
            await tx.rollback()
            raise
        finally:
            response = await pending
    finally:
        await conn.close()
    return response


@pytest.mark.parametrize("query", ["?author_id={id}", "?limit=5"], ids=["by-author", "newest"])
def test_author_deleted_during_a_page_read_is_never_null(api: Api, stack: Stack, query: str) -> None:
    """GET /api/v1/posts while the author of its posts is deleted: no item ever has a null author."""
    author = api.register(name="Vanishing")
    api.create_post(author, title="gone soon")
    path = "/api/v1/posts" + query.format(id=author.id)
    r = asyncio.run(_list_while_author_is_deleted(stack, api, path, author.id))
    page = assert_json(r, 200)
    assert all(item["author"] is not None for item in page["items"]), page
    # The author's posts went with it, in the same snapshot the page was read from.
    assert all(item["author_id"] != author.id for item in page["items"]), page


def test_author_deleted_during_a_post_read_is_never_null(api: Api, stack: Stack) -> None:
    """GET /api/v1/posts/{id} while its author is deleted: the post and its author go together (404)."""
    author = api.register(name="Vanishing")
    post = api.create_post(author, title="gone soon")
    r = asyncio.run(_list_while_author_is_deleted(stack, api, f"/api/v1/posts/{post['id']}", author.id))
    assert_json(r, 404)
