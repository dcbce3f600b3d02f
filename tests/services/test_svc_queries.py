"""List endpoints load authors with ONE batched query, never one per row (queries counted for real)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from svc_kit import MakeClient, bearer, register

from services.posts import repo


class QueryLog:
    """Records every statement the service's connections run (asyncpg's query logger)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def init(self, conn: asyncpg.Connection) -> None:
        """Pool `init` hook: log this connection's queries."""
        conn.add_query_logger(self._record)

    def _record(self, logged: Any) -> None:
        self.queries.append(logged.query)


class CountingExecutor:
    """A real connection that counts the statements a repo function sends through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.queries: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.queries.append(query)
        return await self.conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.queries.append(query)
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.queries.append(query)
        return await self.conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        self.queries.append(query)
        return await self.conn.execute(query, *args)


async def make_posts(client: TestClient[Any, Any], authors: int) -> list[int]:
    """`authors` users with one post each; return the author ids."""
    ids = []
    for i in range(authors):
        body = await register(client, name=f"A{i}")
        response = await client.post(
            "/api/v1/posts", json={"title": "t", "body": "b"}, headers=bearer(body["tokens"])
        )
        assert response.status == 201
        ids.append(body["user"]["id"])
    return ids


async def test_post_list_is_one_query_for_twenty_authors(make_client: MakeClient) -> None:
    """GET /api/v1/posts?limit=20 with 20 distinct authors runs 1 query: the page joined to its authors
    (one snapshot, so an author deleted meanwhile can never show as null)."""
    log = QueryLog()
    # One connection, warmed up: asyncpg introspects a type (bigint[]) once per connection.
    client = await make_client(db_init=log.init, db_pool_min=1, db_pool_max=1)
    await make_posts(client, 20)
    await client.get("/api/v1/posts?limit=20")
    log.queries.clear()
    response = await client.get("/api/v1/posts?limit=20")
    assert response.status == 200
    page = await response.json()
    assert len({p["author_id"] for p in page["items"]}) == 20
    assert all(p["author"]["name"].startswith("A") for p in page["items"])
    assert len(log.queries) == 1, log.queries
    assert "JOIN users" in log.queries[0]


async def test_user_posts_list_needs_no_author_query(make_client: MakeClient) -> None:
    """GET /users/{id}/posts runs 2 queries (user, page) whatever the page size."""
    log = QueryLog()
    client = await make_client(db_init=log.init, db_pool_min=1, db_pool_max=1)
    body = await register(client)
    for _ in range(5):
        await client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=bearer(body["tokens"]))
    log.queries.clear()
    response = await client.get(f"/api/v1/users/{body['user']['id']}/posts")
    assert len((await response.json())["items"]) == 5
    assert len(log.queries) == 2, log.queries


async def test_repo_author_names_is_one_query(client: TestClient[Any, Any], database_url: str) -> None:
    """repo.author_names sends one statement for many rows (and none for an empty page)."""
    author_ids = await make_posts(client, 5)
    conn = await asyncpg.connect(database_url)
    try:
        counting = CountingExecutor(conn)
        rows = await repo.page(counting, 20, 0)
        names = await repo.author_names(counting, rows)
        assert set(author_ids) <= set(names)
        assert len(counting.queries) == 2
        assert await repo.author_names(counting, []) == {}
        assert len(counting.queries) == 2
    finally:
        await conn.close()
