"""Fixtures for the new service: settings on the real test PostgreSQL/Redis and an in-process server.

`aiohttp_client` (pytest-aiohttp) serves the app on a real loopback socket; every test gets its own
Redis key prefix, and the session's migrated database (tests use unique emails).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.app import create_app
from services.db import ConnectionInit
from services.settings import Settings

JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
DRY_RUN_SECRET = "dry-run-secret-for-tests"
PASSWORD = "correct horse battery"

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str) -> Settings:
    """Settings on the shared test database, with this test's Redis prefix and dry run enabled."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        jwt_secret=JWT_SECRET,
        dry_run_secret=DRY_RUN_SECRET,
        db_pool_min=1,
        db_pool_max=4,
        log_level="WARNING",
    )


@pytest.fixture
def make_client(aiohttp_client: Any, settings: Settings) -> MakeClient:
    """Factory: a client of an app built with `settings` changed by keyword overrides."""

    async def make(db_init: ConnectionInit | None = None, **overrides: Any) -> TestClient[Any, Any]:
        app = create_app(dataclasses.replace(settings, **overrides), db_init=db_init)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    """A client of the service with the default test settings."""
    return await make_client()


@pytest.fixture
async def db(database_url: str) -> Any:
    """A direct connection to the test database, for looking behind the API."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def unique_email() -> str:
    """An email no other test uses."""
    return f"user-{secrets.token_hex(6)}@example.com"


async def register(
    client: TestClient[Any, Any], name: str = "Alice", email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    """Register a user through the API; return ``{"user":..,"tokens":..}`` (asserts 201)."""
    response = await client.post(
        "/api/v1/auth/register", json={"email": email or unique_email(), "password": password, "name": name}
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    """The Authorization header for a tokens object."""
    return {"Authorization": f"Bearer {tokens['access_token']}"}
