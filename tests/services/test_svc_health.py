"""Health, readiness and the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from svc_kit import MakeClient

from proxy.devstack.embedded import free_port
from services.health import OPENAPI


async def test_health_reports_version_and_uptime(client: TestClient[Any, Any]) -> None:
    """GET /health answers ok, the version and a millisecond uptime, as compact JSON."""
    response = await client.get("/health")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await response.json()
    assert list(body) == ["status", "version", "uptime_s"]
    assert body["status"] == "ok" and body["version"] == "1.0.0"
    assert isinstance(body["uptime_s"], float | int) and body["uptime_s"] >= 0
    assert b" " not in await response.read()


async def test_ready_when_database_and_redis_answer(client: TestClient[Any, Any]) -> None:
    """GET /health/ready is 200 with both checks ok when PostgreSQL and Redis answer."""
    response = await client.get("/health/ready")
    assert response.status == 200
    assert await response.read() == b'{"status":"ok","checks":{"database":"ok","redis":"ok"}}'


async def test_ready_fails_when_redis_is_down(make_client: MakeClient) -> None:
    """GET /health/ready is 503 naming Redis as failing (with a reason) while the database is ok."""
    client = await make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = await client.get("/health/ready")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "failing"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("failing: ") and len(body["checks"]["redis"]) > 9


async def test_openapi_document_is_served_as_is(client: TestClient[Any, Any]) -> None:
    """GET /openapi.json serves services/openapi.json compact, in its key order (404 if absent)."""
    response = await client.get("/openapi.json")
    if not OPENAPI.exists():
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
        return
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await response.read()
    assert (
        body
        == json.dumps(json.loads(OPENAPI.read_bytes()), separators=(",", ":"), ensure_ascii=False).encode()
    )
