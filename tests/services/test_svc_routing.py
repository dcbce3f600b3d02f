"""Express-like routing, the error shape, request ids and headers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from svc_kit import register
from yarl import URL

from services.http import Router

ROUTE_NOT_FOUND = b'{"error":{"code":"not_found","message":"route not found"}}'


@pytest.mark.parametrize("path", ["/HEALTH", "/Health/", "/health/READY", "/API/V1/USERS", "/api/v1/users/"])
async def test_paths_are_case_insensitive_and_ignore_one_trailing_slash(
    client: TestClient[Any, Any], path: str
) -> None:
    """Literal segments match in any case, with or without one trailing slash, as in Express."""
    response = await client.get(path)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("DELETE", "/health"),
        ("PUT", "/api/v1/users"),
        ("POST", "/api/v1/users/1"),
        ("OPTIONS", "/api/v1/posts"),
        ("GET", "/health//"),
        ("GET", "/api/v1/users/1/posts/x"),
        ("GET", "/api/v1/%75sers"),
    ],
)
async def test_unknown_path_or_method_is_404_never_405(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    """Anything not served answers 404 route not found in the one error shape."""
    # encoded=True: send the target as written (yarl would otherwise decode %75 to "u").
    url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)
    response = await client.session.request(method, url)
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert await response.read() == ROUTE_NOT_FOUND


async def test_head_is_served_by_the_get_handler_without_a_body(client: TestClient[Any, Any]) -> None:
    """HEAD on a GET route answers like GET, with no body (Express's default)."""
    response = await client.head("/health")
    assert response.status == 200
    assert await response.read() == b""


@pytest.mark.parametrize(
    "raw", ["abc", "0", "01", "-1", "1.5", "1e3", "9999999999999999999", "%31%00", "%20"]
)
async def test_malformed_ids_are_unknown_ids(client: TestClient[Any, Any], raw: str) -> None:
    """A path id not matching ^[1-9][0-9]{0,17}$ is a 404 of that resource, never a 500."""
    users = await client.get(f"/api/v1/users/{raw}")
    posts = await client.get(f"/api/v1/posts/{raw}")
    assert (users.status, posts.status) == (404, 404)
    assert (await users.json())["error"]["message"] == "user not found"
    assert (await posts.json())["error"]["message"] == "post not found"


async def test_percent_encoded_id_is_decoded_like_express(client: TestClient[Any, Any]) -> None:
    """A path parameter is percent-decoded before it is checked (Express decodes params)."""
    user = (await register(client))["user"]
    encoded = "".join(f"%{b:02X}" for b in str(user["id"]).encode())
    url = URL(str(client.make_url("/")).rstrip("/") + f"/api/v1/users/{encoded}", encoded=True)
    response = await client.session.get(url)
    assert response.status == 200
    assert (await response.json())["id"] == user["id"]


@pytest.mark.parametrize("raw", ["%zz", "1%", "%C3", "%ED%A0%80"])
async def test_undecodable_escape_in_an_id_is_route_not_found(client: TestClient[Any, Any], raw: str) -> None:
    """A path parameter that decodeURIComponent would refuse makes the path unroutable: 404 route."""
    url = URL(str(client.make_url("/")).rstrip("/") + f"/api/v1/users/{raw}", encoded=True)
    response = await client.session.get(url)
    assert response.status == 404
    assert await response.read() == ROUTE_NOT_FOUND


async def test_request_id_is_echoed_or_generated(client: TestClient[Any, Any]) -> None:
    """X-Request-Id from the request comes back on the response; without one, a UUID4 is generated."""
    echoed = await client.get("/health", headers={"X-Request-Id": "req-123"})
    assert echoed.headers["X-Request-Id"] == "req-123"
    failed = await client.get("/nope", headers={"X-Request-Id": "req-404"})
    assert failed.headers["X-Request-Id"] == "req-404"
    generated = await client.get("/health")
    assert uuid.UUID(generated.headers["X-Request-Id"]).version == 4
    empty = await client.get("/health", headers={"X-Request-Id": ""})
    assert uuid.UUID(empty.headers["X-Request-Id"]).version == 4


async def test_no_etag_no_powered_by_and_204_has_no_content_type(client: TestClient[Any, Any]) -> None:
    """Responses carry no ETag/X-Powered-By; a 204 has neither body nor Content-Type."""
    tokens = (await register(client))["tokens"]
    ok = await client.get("/api/v1/users")
    assert "ETag" not in ok.headers and "X-Powered-By" not in ok.headers
    response = await client.post(
        "/api/v1/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status == 204
    assert "Content-Type" not in response.headers
    assert await response.read() == b""


def test_router_prefers_static_routes_and_keeps_param_case() -> None:
    """The router matches literal segments case-insensitively but hands params over unchanged."""

    async def handler(ctx: Any) -> Any:
        raise AssertionError("not called")

    router = Router([("GET", "/a/{id}", handler), ("GET", "/a/b", handler), ("POST", "/a/{id}", handler)])
    assert router.resolve("GET", "/A/XyZ/")[1] == {"id": "XyZ"}
    assert router.resolve("GET", "/a/B")[1] == {}
    assert router.resolve("POST", "/a/Q")[1] == {"id": "Q"}
