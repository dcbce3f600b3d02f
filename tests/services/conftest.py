"""Fixtures for the new service: settings on the real test PostgreSQL/Redis and an in-process server.

`aiohttp_client` (pytest-aiohttp) serves the app on a real loopback socket; every test gets its own
Redis key prefix, and the session's migrated database (tests use unique emails). Helpers: svc_kit.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from svc_kit import DRY_RUN_SECRET, JWT_SECRET, MakeClient

from services.app import create_app
from services.db import ConnectionInit
from services.settings import Settings


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
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, for looking behind the API."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
