"""Auth flows: register, login, me, refresh rotation, logout, and the access token's checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import bcrypt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from svc_kit import JWT_SECRET, PASSWORD, MakeClient, bearer, register, unique_email

from services import tokens

UNAUTHORIZED = b'{"error":{"code":"unauthorized","message":"missing or invalid access token"}}'


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], payload: dict[str, Any], secret: str = JWT_SECRET, sig: str | None = None
) -> str:
    """A JWT with arbitrary header and payload, signed HS256 with `secret` unless `sig` is given."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if sig is None:
        sig = b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{sig}"


def claims(user_id: int, **changes: Any) -> dict[str, Any]:
    """A valid access payload for `user_id`, with changes."""
    now = int(time.time())
    base = {"sub": str(user_id), "jti": "ab" * 16, "iat": now, "exp": now + 60, "typ": "access"}
    base.update(changes)
    return base


async def test_register_returns_user_and_tokens(client: TestClient[Any, Any]) -> None:
    """Register answers 201 with the user and a Bearer token pair in the contract's key order."""
    body = await register(client, name="Zoë")
    assert list(body) == ["user", "tokens"]
    assert list(body["user"]) == ["id", "email", "name", "created_at", "updated_at"]
    assert list(body["tokens"]) == ["access_token", "token_type", "expires_in", "refresh_token"]
    assert body["tokens"]["token_type"] == "Bearer" and body["tokens"]["expires_in"] == 900
    assert body["user"]["created_at"].endswith("Z") and len(body["user"]["created_at"]) == 24
    header, payload, _ = body["tokens"]["access_token"].split(".")
    assert base64.urlsafe_b64decode(header + "==") == b'{"alg":"HS256","typ":"JWT"}'
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert list(decoded) == ["sub", "jti", "iat", "exp", "typ"]
    assert decoded["sub"] == str(body["user"]["id"]) and decoded["exp"] - decoded["iat"] == 900
    assert len(decoded["jti"]) == 32 and int(decoded["jti"], 16) >= 0
    assert len(body["tokens"]["refresh_token"]) == 43


async def test_login_me_and_stored_hash_is_argon2id(client: TestClient[Any, Any], db: Any) -> None:
    """Login with any email case works; /me returns the user; new hashes are argon2id m=19456,t=2,p=1."""
    email = unique_email()
    user = (await register(client, email=email))["user"]
    response = await client.post("/api/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert response.status == 200
    me = await client.get("/api/v1/auth/me", headers=bearer(await response.json()))
    assert await me.json() == user
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_wrong_password_and_unknown_email_answer_the_same(client: TestClient[Any, Any]) -> None:
    """A wrong password and an unknown email both give 401 invalid_credentials, byte for byte."""
    email = unique_email()
    await register(client, email=email)
    wrong = await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong password"})
    unknown = await client.post("/api/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert wrong.status == unknown.status == 401
    expected = b'{"error":{"code":"invalid_credentials","message":"invalid email or password"}}'
    assert await wrong.read() == await unknown.read() == expected


async def test_login_validates_only_presence_and_type(client: TestClient[Any, Any]) -> None:
    """Login checks required + string only: a short password is 401, a numeric one 422."""
    short = await client.post("/api/v1/auth/login", json={"email": "x", "password": "1"})
    assert short.status == 401
    typed = await client.post("/api/v1/auth/login", json={"email": "x", "password": 1})
    assert typed.status == 422


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
async def test_bcrypt_login_is_upgraded_to_argon2id(
    client: TestClient[Any, Any], db: Any, prefix: str
) -> None:
    """A legacy bcrypt hash ($2a$/$2b$/$2y$) verifies, and the login rewrites it as argon2id."""
    email = unique_email()
    legacy = prefix + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()[4:]
    user_id = await db.fetchval(
        "INSERT INTO users (email, name, password_hash) VALUES ($1, 'Legacy', $2) RETURNING id", email, legacy
    )
    wrong = await client.post("/api/v1/auth/login", json={"email": email, "password": "not the password"})
    assert wrong.status == 401
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id) == legacy
    ok = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert ok.status == 200
    upgraded = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert upgraded.startswith("$argon2id$")
    again = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert again.status == 200


async def test_bcrypt_uses_the_first_72_bytes_like_node(client: TestClient[Any, Any], db: Any) -> None:
    """A long password against a bcrypt hash is compared on its first 72 bytes (no 500)."""
    email, password = unique_email(), "p" * 100
    legacy = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(4)).decode()
    await db.execute("INSERT INTO users (email, name, password_hash) VALUES ($1, 'L', $2)", email, legacy)
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status == 200


async def test_refresh_rotates_and_old_token_is_dead(client: TestClient[Any, Any]) -> None:
    """Refresh returns new tokens and revokes the presented one; reuse and garbage are 401 invalid_token."""
    old = (await register(client))["tokens"]["refresh_token"]
    first = await client.post("/api/v1/auth/refresh", json={"refresh_token": old})
    assert first.status == 200
    new = await first.json()
    assert new["refresh_token"] != old
    reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": old})
    assert reused.status == 401
    expected = b'{"error":{"code":"invalid_token","message":"refresh token is invalid or expired"}}'
    assert await reused.read() == expected
    garbage = await client.post("/api/v1/auth/refresh", json={"refresh_token": "nope"})
    assert garbage.status == 401
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
    ).status == 200


async def test_expired_refresh_token_is_refused(client: TestClient[Any, Any], db: Any) -> None:
    """A refresh token past its expiry is 401 invalid_token."""
    refresh = (await register(client))["tokens"]["refresh_token"]
    digest = hashlib.sha256(refresh.encode()).hexdigest()
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1", digest
    )
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert response.status == 401


async def test_logout_revokes_access_and_refresh_tokens(
    client: TestClient[Any, Any], redis_url: str, redis_prefix: str
) -> None:
    """Logout is 204; the access token is then refused (Redis key per contract) and refresh fails."""
    body = await register(client)
    access = body["tokens"]["access_token"]
    second = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": body["tokens"]["refresh_token"]}
    )
    spare_refresh = (await second.json())["refresh_token"]
    response = await client.post("/api/v1/auth/logout", headers=bearer(body["tokens"]), data=b"not json")
    assert response.status == 204
    assert (await client.get("/api/v1/auth/me", headers=bearer(body["tokens"]))).status == 401
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": spare_refresh})).status == 401
    jti = tokens.verify(JWT_SECRET, access, int(time.time()))
    assert jti is not None
    r = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await r.ttl(f"{redis_prefix}revoked:{jti.jti}")
    finally:
        await r.aclose()
    assert 0 < ttl <= 900


async def test_token_revoked_by_the_other_service_is_refused(
    client: TestClient[Any, Any], redis_url: str, redis_prefix: str
) -> None:
    """A jti written to <prefix>revoked:<jti> (as the legacy app's logout does) makes the token 401."""
    body = await register(client)
    claims_ = tokens.verify(JWT_SECRET, body["tokens"]["access_token"], int(time.time()))
    assert claims_ is not None
    assert (await client.get("/api/v1/auth/me", headers=bearer(body["tokens"]))).status == 200
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(f"{redis_prefix}revoked:{claims_.jti}", "1", ex=60)
    finally:
        await r.aclose()
    assert (await client.get("/api/v1/auth/me", headers=bearer(body["tokens"]))).status == 401


async def test_tampered_expired_and_foreign_tokens_are_401(client: TestClient[Any, Any]) -> None:
    """alg none, other algs, bad signatures, expiry, refresh typ, bad sub: all the same 401."""
    user_id = (await register(client))["user"]["id"]
    good_header = {"alg": "HS256", "typ": "JWT"}
    valid = forge(good_header, claims(user_id))
    assert (await client.get("/api/v1/auth/me", headers={"Authorization": f"bearer {valid}"})).status == 200
    head, payload, sig = valid.split(".")
    other_payload = b64(json.dumps(claims(user_id + 1)).encode())
    bad = [
        forge({"alg": "none", "typ": "JWT"}, claims(user_id), sig=""),
        forge({"alg": "none", "typ": "JWT"}, claims(user_id)),
        forge({"alg": "HS512", "typ": "JWT"}, claims(user_id)),
        forge({"alg": "hs256", "typ": "JWT"}, claims(user_id)),
        forge(good_header, claims(user_id), secret="another secret that is long enough!!"),
        forge(good_header, claims(user_id, exp=int(time.time()))),
        forge(good_header, claims(user_id, exp=str(int(time.time()) + 60))),
        forge(good_header, claims(user_id, typ="refresh")),
        forge(good_header, claims(user_id, sub=user_id)),
        forge(good_header, claims(user_id, sub="0")),
        forge(good_header, claims(user_id, jti="AB" * 16)),
        forge(good_header, claims(user_id, jti="ab")),
        forge(good_header, claims(user_id, exp=True)),
        f"{head}.{other_payload}.{sig}",
        f"{head}.{payload}.{sig[:-2]}",
        f"{head}.{payload}.{sig}x",
        f"{head}.{payload}",
        "garbage",
        f"{head}.{payload}.{sig}.x",
    ]
    for token in bad:
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401, token
        assert await response.read() == UNAUTHORIZED
        assert response.headers["WWW-Authenticate"] == "Bearer"
    for header in (f"Token {valid}", valid, "Bearer", "Bearer ", f"Basic {valid}", f"Bearer {valid} x"):
        response = await client.get("/api/v1/auth/me", headers={"Authorization": header})
        assert response.status == 401, header
    spaced = await client.get("/api/v1/auth/me", headers={"Authorization": f"BEARER   {valid}"})
    assert spaced.status == 200


def test_verify_rejects_none_and_accepts_only_hs256() -> None:
    """Unit: tokens.verify accepts an issued token and refuses an alg-none copy of it."""
    now = int(time.time())
    token = tokens.issue_access(JWT_SECRET, 7, 60, now)
    verified = tokens.verify(JWT_SECRET, token, now)
    assert verified is not None and verified.user_id == 7 and verified.exp == now + 60
    _, payload, _ = token.split(".")
    none_header = b64(b'{"alg":"none","typ":"JWT"}')
    none_token = f"{none_header}.{payload}."
    assert tokens.verify(JWT_SECRET, none_token, now) is None
    assert tokens.verify(JWT_SECRET, token, now + 60) is None


async def test_deleted_users_token_is_401_everywhere(client: TestClient[Any, Any]) -> None:
    """After the user is deleted, its still-unexpired token gets 401 on every authenticated endpoint."""
    body = await register(client)
    other_login = await client.post(
        "/api/v1/auth/login", json={"email": body["user"]["email"], "password": PASSWORD}
    )
    spare = await other_login.json()
    deleted = await client.delete(f"/api/v1/users/{body['user']['id']}", headers=bearer(body["tokens"]))
    assert deleted.status == 204
    assert (await client.get("/api/v1/auth/me", headers=bearer(spare))).status == 401
    post = await client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=bearer(spare))
    assert post.status == 401
    patch = await client.patch(
        f"/api/v1/users/{body['user']['id']}", json={"name": "x"}, headers=bearer(spare)
    )
    assert patch.status == 401
    assert (await client.post("/api/v1/auth/logout", headers=bearer(spare))).status == 401


async def test_access_ttl_comes_from_settings(make_client: MakeClient) -> None:
    """ACCESS_TOKEN_TTL sets expires_in and the token's exp."""
    client = await make_client(access_token_ttl=42)
    body = await register(client)
    assert body["tokens"]["expires_in"] == 42
