"""POST /api/v1/posts: one statement when the body is valid, and auth's 401 still wins over body errors."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from svc_kit import PASSWORD, MakeClient, bearer, register
from test_svc_dry_run import sign
from test_svc_queries import QueryLog

JSON = {"Content-Type": "application/json"}


async def dead_users_token(client: TestClient[Any, Any]) -> dict[str, str]:
    """Headers with a valid, unrevoked access token of a user that has since been deleted."""
    body = await register(client)
    login = await client.post(
        "/api/v1/auth/login", json={"email": body["user"]["email"], "password": PASSWORD}
    )
    spare = await login.json()
    deleted = await client.delete(f"/api/v1/users/{body['user']['id']}", headers=bearer(body["tokens"]))
    assert deleted.status == 204
    return bearer(spare)


async def test_create_is_one_statement(make_client: MakeClient) -> None:
    """A valid create runs exactly one SQL statement and still answers the author's name."""
    log = QueryLog()
    client = await make_client(db_init=log.init, db_pool_min=1, db_pool_max=1)
    body = await register(client, name="Writer")
    log.queries.clear()
    response = await client.post(
        "/api/v1/posts", json={"title": "t", "body": "b"}, headers=bearer(body["tokens"])
    )
    assert response.status == 201
    created = await response.json()
    assert created["author"] == {"id": body["user"]["id"], "name": "Writer"}
    assert created["author_id"] == body["user"]["id"]
    assert len(log.queries) == 1, log.queries


async def test_create_answers_what_get_answers(client: TestClient[Any, Any]) -> None:
    """The 201 body is byte-for-byte the post GET /posts/{id} answers right after."""
    body = await register(client, name="Same")
    response = await client.post(
        "/api/v1/posts", json={"title": "héllo", "body": "wörld"}, headers=bearer(body["tokens"])
    )
    assert response.status == 201
    raw = await response.read()
    post_id = (await response.json())["id"]
    again = await client.get(f"/api/v1/posts/{post_id}")
    assert await again.read() == raw


async def test_deleted_users_token_is_401_before_any_body_error(client: TestClient[Any, Any]) -> None:
    """A deleted user's token gets 401, not 415/413/400/422, whatever is wrong with the body."""
    headers = await dead_users_token(client)
    bodies: list[tuple[dict[str, str], bytes]] = [
        ({"Content-Type": "text/plain"}, b'{"title": "t", "body": "b"}'),
        (JSON, b" " * 102_401),
        (JSON, b"{not json"),
        (JSON, b'{"title": ""}'),
        (JSON, b'{"title": "t", "body": "b"}'),
    ]
    for extra, data in bodies:
        response = await client.post("/api/v1/posts", data=data, headers={**headers, **extra})
        assert response.status == 401, (extra, data[:20], await response.text())
        assert (await response.json())["error"]["code"] == "unauthorized"


async def test_live_users_body_errors_are_unchanged(client: TestClient[Any, Any]) -> None:
    """A live user's bad body still gets its own error: 415, 413, 400, 422 in that order of checks."""
    headers = bearer((await register(client))["tokens"])
    cases: list[tuple[dict[str, str], bytes, int]] = [
        ({"Content-Type": "text/plain"}, b"{not json", 415),
        (JSON, b"{" * 102_401, 413),
        (JSON, b"{not json", 400),
        (JSON, b'{"title": ""}', 422),
    ]
    for extra, data, status in cases:
        response = await client.post("/api/v1/posts", data=data, headers={**headers, **extra})
        assert response.status == status, (extra, data[:20], await response.text())


async def test_dry_run_create_of_deleted_user_is_401(client: TestClient[Any, Any]) -> None:
    """Inside a dry run's transaction the folded statement also answers 401 for a deleted author,
    for a valid body and for an invalid one."""
    headers = await dead_users_token(client)
    for data in (b'{"title": "t", "body": "b"}', b'{"title": ""}'):
        signed = {**headers, **JSON, "X-Strangler-Dry-Run": sign("POST", "/api/v1/posts", data)}
        response = await client.post("/api/v1/posts", data=data, headers=signed)
        assert response.status == 401, await response.text()
        assert response.headers["X-Strangler-Dry-Run"] == "applied"
