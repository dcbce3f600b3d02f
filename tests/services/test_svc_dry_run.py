"""Dry run: a signed request runs in a rolled-back transaction and skips Redis writes."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from svc_kit import DRY_RUN_SECRET, PASSWORD, MakeClient, bearer, register, unique_email

BAD_SIGNATURE = b'{"error":{"code":"forbidden","message":"invalid dry-run signature"}}'


def sign(method: str, target: str, body: bytes = b"", t: int | None = None, secret: str = DRY_RUN_SECRET,
         nonce: str | None = None) -> str:  # fmt: skip
    """The X-Strangler-Dry-Run header value, computed from docs/API.md (an independent oracle)."""
    t = int(time.time()) if t is None else t
    n = secrets.token_hex(16) if nonce is None else nonce
    message = f"{t}\n{n}\n{method}\n{target}\n{hashlib.sha256(body).hexdigest()}".encode()
    return f"t={t},n={n},sig={hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


def raw(value: Any) -> bytes:
    """A JSON body as the bytes that are sent (and signed)."""
    return json.dumps(value).encode()


JSON = {"Content-Type": "application/json"}
POST_BODY = b'{"title":"t","body":"b"}'


async def test_dry_run_post_returns_201_and_leaves_the_table_unchanged(
    client: TestClient[Any, Any], db: Any
) -> None:
    """A signed POST /api/v1/posts answers 201 with a post, marked applied, and nothing is stored."""
    author = await register(client)
    before = await db.fetchval("SELECT count(*) FROM posts")
    data = raw({"title": "shadow", "body": "b"})
    headers = {**bearer(author["tokens"]), **JSON, "X-Strangler-Dry-Run": sign("POST", "/api/v1/posts", data)}
    response = await client.post("/api/v1/posts", data=data, headers=headers)
    assert response.status == 201
    assert response.headers["X-Strangler-Dry-Run"] == "applied"
    post = await response.json()
    assert post["title"] == "shadow" and post["author"]["id"] == author["user"]["id"]
    assert await db.fetchval("SELECT count(*) FROM posts") == before
    assert await db.fetchval("SELECT count(*) FROM posts WHERE id = $1", post["id"]) == 0


async def test_dry_run_register_and_query_string_are_signed(client: TestClient[Any, Any], db: Any) -> None:
    """The signature covers path and query; a dry-run register stores neither user nor refresh token."""
    email = unique_email()
    target = "/api/v1/auth/register?x=1"
    data = raw({"email": email, "password": PASSWORD, "name": "Dry"})
    headers = {**JSON, "X-Strangler-Dry-Run": sign("POST", target, data)}
    response = await client.post(target, data=data, headers=headers)
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0
    wrong_query = await client.post(
        "/api/v1/auth/register?x=2", data=data, headers=headers
    )
    assert wrong_query.status == 403


async def test_dry_run_skips_redis_writes(
    client: TestClient[Any, Any], redis_url: str, redis_prefix: str
) -> None:
    """A dry-run login counts nothing and a dry-run logout revokes nothing: the only keys written are the
    two signatures' nonces (each signature is single use)."""
    body = await register(client)
    data = raw({"email": body["user"]["email"], "password": PASSWORD})
    headers = {**JSON, "X-Strangler-Dry-Run": sign("POST", "/api/v1/auth/login", data)}
    login = await client.post("/api/v1/auth/login", data=data, headers=headers)
    assert login.status == 200
    logout = await client.post(
        "/api/v1/auth/logout",
        headers={**bearer(body["tokens"]), "X-Strangler-Dry-Run": sign("POST", "/api/v1/auth/logout")},
    )
    assert logout.status == 204 and logout.headers["X-Strangler-Dry-Run"] == "applied"
    r = aioredis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in await r.keys(f"{redis_prefix}*"))
        assert len(keys) == 2 and all(k.startswith(f"{redis_prefix}dryrun:") for k in keys), keys
    finally:
        await r.aclose()
    assert (await client.get("/api/v1/auth/me", headers=bearer(body["tokens"]))).status == 200


async def test_dry_run_error_responses_are_marked_too(client: TestClient[Any, Any]) -> None:
    """A valid dry run that ends in an error (404) still says it was applied."""
    response = await client.get(
        "/api/v1/users/999999999999",
        headers={"X-Strangler-Dry-Run": sign("GET", "/api/v1/users/999999999999")},
    )
    assert response.status == 404
    assert response.headers["X-Strangler-Dry-Run"] == "applied"


@pytest.mark.parametrize(
    "header",
    [
        sign("POST", "/api/v1/posts", POST_BODY, t=int(time.time()) - 120),
        sign("POST", "/api/v1/posts", POST_BODY, secret="some other secret"),
        sign("GET", "/api/v1/posts", POST_BODY),
        sign("POST", "/api/v1/posts", b'{"title":"t","body":"other"}'),
        sign("POST", "/api/v1/posts", POST_BODY).replace(",sig=", "0,sig="),
        "t=1,sig=zz",
        "garbage",
        "",
    ],
)
async def test_bad_or_stale_signature_is_403(client: TestClient[Any, Any], db: Any, header: str) -> None:
    """Present but invalid or older than 30 s: 403 invalid dry-run signature, and nothing runs."""
    author = await register(client)
    before = await db.fetchval("SELECT count(*) FROM posts")
    headers = {**bearer(author["tokens"]), **JSON, "X-Strangler-Dry-Run": header}
    response = await client.post("/api/v1/posts", data=POST_BODY, headers=headers)
    assert response.status == 403
    assert await response.read() == BAD_SIGNATURE
    assert "X-Strangler-Dry-Run" not in response.headers
    assert await db.fetchval("SELECT count(*) FROM posts") == before


async def test_dry_run_without_secret_is_403(make_client: MakeClient) -> None:
    """When DRY_RUN_SECRET is not configured, any dry-run header is refused."""
    client = await make_client(dry_run_secret=None)
    response = await client.get("/health", headers={"X-Strangler-Dry-Run": sign("GET", "/health")})
    assert response.status == 403


async def test_a_replayed_signature_is_403(client: TestClient[Any, Any], db: Any) -> None:
    """The same signed request twice: the first is applied, the second refused (nonces are single use)."""
    author = await register(client)
    signature = sign("POST", "/api/v1/posts", POST_BODY)
    headers = {**bearer(author["tokens"]), **JSON, "X-Strangler-Dry-Run": signature}
    first = await client.post("/api/v1/posts", data=POST_BODY, headers=headers)
    assert first.status == 201 and first.headers["X-Strangler-Dry-Run"] == "applied"
    again = await client.post("/api/v1/posts", data=POST_BODY, headers=headers)
    assert again.status == 403 and await again.read() == BAD_SIGNATURE


async def test_dry_run_login_keeps_the_rate_limit_without_counting(
    make_client: MakeClient, redis_url: str, redis_prefix: str
) -> None:
    """A dry-run login is judged by the same limit as the real one would be (401 under it, 429 with
    Retry-After once the real attempts reach it) and never adds to the counter."""
    client = await make_client(login_rate_limit_account=2, login_rate_window=120)
    email = unique_email()
    await register(client, email=email)
    data = raw({"email": email, "password": "bad password"})
    key = f"{redis_prefix}rl:login:acct:{hashlib.sha256(email.lower().encode()).hexdigest()}"
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def attempt(dry: bool) -> tuple[int, str | None]:
        headers = {**JSON, "X-Strangler-Dry-Run": sign("POST", "/api/v1/auth/login", data)} if dry else JSON
        response = await client.post("/api/v1/auth/login", data=data, headers=headers)
        return response.status, response.headers.get("Retry-After")

    try:
        assert (await attempt(dry=False))[0] == 401  # counted: 1 of 2
        assert (await attempt(dry=True))[0] == 401  # would be 2 of 2: allowed, not counted
        assert await r.get(key) == "1"
        assert (await attempt(dry=False))[0] == 401  # counted: 2 of 2
        status, retry_after = await attempt(dry=True)  # would be 3 of 2: refused, not counted
        assert status == 429 and retry_after is not None and 0 < int(retry_after) <= 120
        assert await r.get(key) == "2"
        assert (await attempt(dry=False))[0] == 429  # the real third attempt: refused as the dry run said
        assert await r.get(key) == "3"
    finally:
        await r.aclose()
