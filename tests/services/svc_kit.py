"""Helpers for the new service's tests: constants, unique emails, registering, bearer headers."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
DRY_RUN_SECRET = "dry-run-secret-for-tests"
PASSWORD = "correct horse battery"

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


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
