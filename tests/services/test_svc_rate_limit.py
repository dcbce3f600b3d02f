"""Login rate limiting in Redis, per account and per client IP, with Express's trust-proxy client IP."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from svc_kit import PASSWORD, MakeClient, register, unique_email

RATE_LIMITED = b'{"error":{"code":"rate_limited","message":"too many login attempts, try again later"}}'


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for looking at the keys the service wrote."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_account_limit_blocks_even_the_right_password(
    make_client: MakeClient, r: aioredis.Redis, redis_prefix: str
) -> None:
    """Over LOGIN_RATE_LIMIT_ACCOUNT attempts in the window: 429 with Retry-After, before the password."""
    client = await make_client(login_rate_limit_account=3, login_rate_window=120)
    email = unique_email()
    await register(client, email=email)
    for _ in range(3):
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": email.upper(), "password": "bad password"}
        )
        assert wrong.status == 401
    blocked = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert blocked.status == 429
    assert await blocked.read() == RATE_LIMITED
    assert 0 < int(blocked.headers["Retry-After"]) <= 120
    key = f"{redis_prefix}rl:login:acct:{hashlib.sha256(email.lower().encode()).hexdigest()}"
    assert await r.get(key) == "4"
    assert 0 < await r.ttl(key) <= 120
    other = await client.post("/api/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert other.status == 401


async def test_invalid_requests_are_not_counted(
    make_client: MakeClient, r: aioredis.Redis, redis_prefix: str
) -> None:
    """A login that fails validation (422) does not touch the counters."""
    client = await make_client(login_rate_limit_account=1)
    response = await client.post("/api/v1/auth/login", json={"email": "a@b.cd"})
    assert response.status == 422
    assert await r.keys(f"{redis_prefix}rl:*") == []


async def test_ip_limit_uses_the_trusted_forwarded_address(
    make_client: MakeClient, r: aioredis.Redis, redis_prefix: str
) -> None:
    """With TRUSTED_HOPS=1 the rightmost X-Forwarded-For entry is the client; each IP has its own budget."""
    client = await make_client(login_rate_limit_ip=2, trusted_hops=1)

    async def attempt(xff: str) -> int:
        body = {"email": unique_email(), "password": PASSWORD}
        response = await client.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-For": xff})
        return response.status

    assert [await attempt("9.9.9.9, 1.2.3.4") for _ in range(3)] == [401, 401, 429]
    assert await attempt("1.2.3.4") == 429
    assert await attempt("5.6.7.8") == 401
    assert await r.get(f"{redis_prefix}rl:login:ip:1.2.3.4") == "4"


@pytest.mark.parametrize(
    ("hops", "xff", "expected"),
    [
        (0, "1.1.1.1", "127.0.0.1"),
        (1, None, "127.0.0.1"),
        (2, "a, b ,c", "b"),
        (3, "a,b,c", "a"),
        (5, "a,b", "a"),
        (2, "a,,b, ", "a"),
    ],
)
async def test_client_ip_matches_express_trust_proxy(
    make_client: MakeClient, r: aioredis.Redis, redis_prefix: str, hops: int, xff: str | None, expected: str
) -> None:
    """The rate-limit key uses the Nth address from the right of X-Forwarded-For (leftmost if fewer)."""
    client = await make_client(trusted_hops=hops)
    headers = {} if xff is None else {"X-Forwarded-For": xff}
    await client.post("/api/v1/auth/login", json={"email": unique_email(), "password": "x"}, headers=headers)
    keys = await r.keys(f"{redis_prefix}rl:login:ip:*")
    assert keys == [f"{redis_prefix}rl:login:ip:{expected}"]


async def test_both_over_retry_after_is_the_longer_ttl(
    make_client: MakeClient, r: aioredis.Redis, redis_prefix: str
) -> None:
    """When account and IP are both over, Retry-After is the larger remaining TTL; a lost TTL is restored."""
    client = await make_client(login_rate_limit_account=1, login_rate_limit_ip=1, login_rate_window=50)
    email = unique_email()
    await r.set(f"{redis_prefix}rl:login:ip:127.0.0.1", 5, ex=200)
    account_key = f"{redis_prefix}rl:login:acct:{hashlib.sha256(email.encode()).hexdigest()}"
    await r.set(account_key, 5)  # no TTL, as after a crash between INCR and EXPIRE
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": "x"})
    assert response.status == 429
    assert 190 < int(response.headers["Retry-After"]) <= 200
    assert 0 < await r.ttl(account_key) <= 50


async def test_limit_is_shared_through_redis(make_client: MakeClient) -> None:
    """Two service instances on the same Redis prefix share one counter (as legacy and new do)."""
    first = await make_client(login_rate_limit_account=2)
    second = await make_client(login_rate_limit_account=2)
    email = unique_email()
    body = {"email": email, "password": "bad password"}
    assert (await first.post("/api/v1/auth/login", json=body)).status == 401
    assert (await second.post("/api/v1/auth/login", json=body)).status == 401
    assert (await first.post("/api/v1/auth/login", json=body)).status == 429
