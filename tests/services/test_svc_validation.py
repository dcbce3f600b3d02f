"""Request checks in the contract's order: 401 -> 415 -> 413 -> 400 -> 422 -> 404 -> 403 -> 409."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from svc_kit import bearer, register, unique_email

JSON = {"Content-Type": "application/json"}


def fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The 422 field list as (field, message) pairs."""
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["message"] == "request validation failed"
    return [(f["field"], f["message"]) for f in body["error"]["fields"]]


async def test_validation_error_shape_is_exact(client: TestClient[Any, Any]) -> None:
    """A 422 body is compact, keys in order, with the fields list after the message."""
    response = await client.post(
        "/api/v1/users", json={"email": "nope", "password": "password1", "name": "A"}
    )
    assert response.status == 422
    assert await response.read() == (
        b'{"error":{"code":"validation_failed","message":"request validation failed",'
        b'"fields":[{"field":"email","message":"must be a valid email address"}]}}'
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], [("body", "must be a JSON object")]),
        ("text", [("body", "must be a JSON object")]),
        (None, [("body", "must be a JSON object")]),
        ({}, [("email", "is required"), ("password", "is required"), ("name", "is required")]),
        (
            {"email": None, "password": 12345678, "name": ["x"]},
            [("email", "must be a string"), ("password", "must be a string"), ("name", "must be a string")],
        ),
        (
            {"email": "a@b.c", "password": "short", "name": ""},
            [
                ("password", "must be between 8 and 128 characters"),
                ("name", "must be between 1 and 100 characters"),
            ],
        ),
        (
            {"email": "a@b.c", "password": "p" * 129, "name": "n" * 101},
            [
                ("password", "must be between 8 and 128 characters"),
                ("name", "must be between 1 and 100 characters"),
            ],
        ),
        (
            {"email": "a@b.c\n", "password": "password", "name": "n", "zeta": 1, "Alpha": 2, "beta": 3},
            [
                ("email", "must be a valid email address"),
                ("Alpha", "unknown field"),
                ("beta", "unknown field"),
                ("zeta", "unknown field"),
            ],
        ),
        (
            {"email": "a@@b.c", "password": "password", "name": "n"},
            [("email", "must be a valid email address")],
        ),
        (
            {"email": "ä@b.c", "password": "password", "name": "n"},
            [("email", "must be a valid email address")],
        ),
        (
            {"email": "a" * 250 + "@b.cd", "password": "password", "name": "n"},
            [("email", "must be a valid email address")],
        ),
    ],
)
async def test_user_body_rules_and_field_order(
    client: TestClient[Any, Any], body: Any, expected: list[tuple[str, str]]
) -> None:
    """Declared fields in order (first failing rule each), then unknown fields sorted by name."""
    response = await client.post("/api/v1/users", data=json.dumps(body), headers=JSON)
    assert response.status == 422
    assert fields(await response.json()) == expected


async def test_unknown_fields_sort_by_code_point(client: TestClient[Any, Any]) -> None:
    """Unknown fields are sorted by code point (U+FFFF before U+1F600, unlike UTF-16 order)."""
    body = {
        "email": unique_email(),
        "password": "password1",
        "name": "n",
        "😀": 1,
        "\uffff": 2,
        "B": 3,
        "a": 4,
    }
    response = await client.post("/api/v1/users", json=body)
    assert [f for f, _ in fields(await response.json())] == ["B", "a", "\uffff", "😀"]


async def test_lengths_count_code_points(client: TestClient[Any, Any]) -> None:
    """Lengths are code points: 100 emoji are a valid name, 8 emoji a valid password."""
    response = await client.post(
        "/api/v1/users", json={"email": unique_email(), "password": "😀" * 8, "name": "😀" * 100}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["name"] == "😀" * 100


async def test_email_is_lowercased_and_nothing_else_is_trimmed(client: TestClient[Any, Any]) -> None:
    """Emails are stored lowercased; names keep their spaces and case."""
    email = unique_email().upper()
    response = await client.post(
        "/api/v1/users", json={"email": email, "password": "password1", "name": " Bo "}
    )
    body = await response.json()
    assert (body["email"], body["name"]) == (email.lower(), " Bo ")
    again = await client.post(
        "/api/v1/users", json={"email": email.lower(), "password": "password1", "name": "x"}
    )
    assert again.status == 409
    assert await again.read() == b'{"error":{"code":"conflict","message":"email already registered"}}'


async def test_content_type_size_and_json_checks(client: TestClient[Any, Any]) -> None:
    """415 without application/json, 413 over 102400 bytes, 400 on malformed or empty JSON."""
    no_type = await client.post("/api/v1/users", data=b'{"a":1}')
    assert no_type.status == 415
    assert (await no_type.json())["error"] == {
        "code": "unsupported_media_type",
        "message": "Content-Type must be application/json",
    }
    wrong = await client.post("/api/v1/users", data=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong.status == 415
    with_params = await client.post(
        "/api/v1/users", data=b"{}", headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert with_params.status == 422
    big = await client.post("/api/v1/users", data=b" " * 102_401, headers=JSON)
    assert big.status == 413
    assert (await big.json())["error"] == {
        "code": "payload_too_large",
        "message": "request body exceeds 102400 bytes",
    }
    at_limit = await client.post("/api/v1/users", data=b"{}" + b" " * 102_398, headers=JSON)
    assert at_limit.status == 422
    for raw in (b"{", b"", b"{'a':1}", b"NaN", b'{"a":1}x'):
        bad = await client.post("/api/v1/users", data=raw, headers=JSON)
        assert bad.status == 400, raw
        assert (
            await bad.read()
            == b'{"error":{"code":"invalid_json","message":"request body is not valid JSON"}}'
        )


async def test_json_a_strict_parser_refuses_is_400(client: TestClient[Any, Any]) -> None:
    """Lone surrogates, numbers beyond a double, nesting past 1024, a BOM, invalid UTF-8: all 400."""
    for raw in (
        b'{"name":"a\\ud800b"}',
        b'{"\\udc00":1}',
        b'{"email":1e400}',
        b"[" * 1025 + b"]" * 1025,
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":"\xff"}',
        b'{"a":NaN}',
    ):
        bad = await client.post("/api/v1/users", data=raw, headers=JSON)
        assert bad.status == 400, raw
    deep_but_allowed = await client.post("/api/v1/users", data=b"[" * 1024 + b"]" * 1024, headers=JSON)
    assert fields(await deep_but_allowed.json()) == [("body", "must be a JSON object")]


async def test_chunked_oversized_body_is_413(client: TestClient[Any, Any]) -> None:
    """A body without Content-Length that grows past the limit is 413 too."""

    async def chunks() -> Any:
        for _ in range(30):
            yield b" " * 4096

    response = await client.post("/api/v1/users", data=chunks(), headers=JSON)
    assert response.status == 413


async def test_auth_is_checked_before_content_type_and_body(client: TestClient[Any, Any]) -> None:
    """On an authenticated endpoint, a missing token is 401 even with a bad content type or body."""
    response = await client.post("/api/v1/posts", data=b"{", headers={"Content-Type": "text/plain"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_validation_comes_before_existence_and_ownership(client: TestClient[Any, Any]) -> None:
    """PATCH of a missing user with a bad body is 422; with a good body 404; someone else's user 403."""
    me, other = await register(client), await register(client)
    headers = bearer(me["tokens"])
    bad = await client.patch("/api/v1/users/999999999", json={"name": ""}, headers=headers)
    assert bad.status == 422
    missing = await client.patch("/api/v1/users/999999999", json={"name": "x"}, headers=headers)
    assert missing.status == 404
    theirs = await client.patch(f"/api/v1/users/{other['user']['id']}", json={"name": "x"}, headers=headers)
    assert theirs.status == 403
    assert (await theirs.json())["error"]["message"] == "you may only change your own user"


async def test_patch_needs_one_known_field(client: TestClient[Any, Any]) -> None:
    """An empty PATCH says it must contain a field; unknown fields alone are reported as unknown."""
    me = await register(client)
    url, headers = f"/api/v1/users/{me['user']['id']}", bearer(me["tokens"])
    empty = await client.patch(url, json={}, headers=headers)
    assert fields(await empty.json()) == [("body", "must contain at least one field")]
    unknown = await client.patch(url, json={"nickname": "x"}, headers=headers)
    assert fields(await unknown.json()) == [("nickname", "unknown field")]
    null = await client.patch(url, json={"name": None}, headers=headers)
    assert fields(await null.json()) == [("name", "must be a string")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=0", [("limit", "must be an integer between 1 and 100")]),
        ("limit=101", [("limit", "must be an integer between 1 and 100")]),
        ("limit=1e1", [("limit", "must be an integer between 1 and 100")]),
        ("limit=", [("limit", "must be an integer between 1 and 100")]),
        ("limit=1&limit=2", [("limit", "must be an integer between 1 and 100")]),
        ("limit=0010&offset=-1", [("offset", "must be a non-negative integer")]),
        ("offset=1234567890", [("offset", "must be a non-negative integer")]),
        (
            "author_id=0&offset=x&limit=x",
            [
                ("limit", "must be an integer between 1 and 100"),
                ("offset", "must be a non-negative integer"),
                ("author_id", "must be a positive integer"),
            ],
        ),
    ],
)
async def test_query_rules_and_order(
    client: TestClient[Any, Any], query: str, expected: list[tuple[str, str]]
) -> None:
    """limit, offset, author_id are checked with the contract's patterns and reported in that order."""
    response = await client.get(f"/api/v1/posts?{query}")
    assert response.status == 422
    assert fields(await response.json()) == expected


async def test_unknown_query_parameters_are_ignored(client: TestClient[Any, Any]) -> None:
    """Unknown query parameters do not matter; leading zeros are allowed by the pattern."""
    response = await client.get("/api/v1/users?limit=007&whatever=1")
    assert response.status == 200
    assert (await response.json())["limit"] == 7
