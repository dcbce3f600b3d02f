"""Body handling errors (400, 413, 415) and the documented order of checks (both services)."""

from __future__ import annotations

import pytest
from contract_kit import (
    NOT_FOUND_ROUTE,
    UNAUTHORIZED,
    Account,
    Api,
    assert_error,
    assert_json,
    compact,
    unique_email,
    validation,
)

LIMIT_BYTES = 102400
TOO_LARGE = ("payload_too_large", "request body exceeds 102400 bytes")
UNSUPPORTED = ("unsupported_media_type", "Content-Type must be application/json")
INVALID_JSON = ("invalid_json", "request body is not valid JSON")


@pytest.mark.parametrize("raw", [b"{", b"{'a':1}", b'{"email":}', b"nul", b'{"a":1}x', b"\xff\xfe", b"",
                                 b"\xef\xbb\xbf{}", b'{"name":"\xc3"}'])
def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    """A body that is not valid JSON (also empty, BOM-prefixed or invalid UTF-8) answers 400 invalid_json."""
    r = api.post("/api/v1/users", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, *INVALID_JSON)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data", "application/jsonx", "json"])
def test_wrong_content_type_is_415(api: Api, ctype: str | None) -> None:
    """Endpoints that take a body require application/json, else 415."""
    headers = {"Content-Type": ctype} if ctype else {}
    r = api.post("/api/v1/users", content=b'{"email":"a@b.co"}', headers=headers)
    assert_error(r, 415, *UNSUPPORTED)


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON",
                                   "application/json;charset=UTF-8"])
def test_json_content_type_with_parameters_is_accepted(api: Api, ctype: str) -> None:
    """application/json in any case, with parameters, passes the content-type check."""
    body = compact({"email": unique_email("ct"), "password": "password123", "name": "CT"})
    r = api.post("/api/v1/users", content=body, headers={"Content-Type": ctype})
    assert_json(r, 201)


def test_body_over_limit_is_413(api: Api) -> None:
    """A body over 102400 bytes answers 413 (checked before parsing); exactly 102400 is parsed."""
    big = b'{"name":"' + b"x" * LIMIT_BYTES + b'"}'
    assert_error(api.post("/api/v1/users", content=big, headers={"Content-Type": "application/json"}),
                 413, *TOO_LARGE)
    garbage = b"{" * (LIMIT_BYTES + 1)
    assert_error(api.post("/api/v1/users", content=garbage, headers={"Content-Type": "application/json"}),
                 413, *TOO_LARGE)
    # Exactly at the limit it is read and validated (here: name too long).
    pad = LIMIT_BYTES - len(b'{"email":"a@example.com","password":"password123","name":""}')
    exact = b'{"email":"a@example.com","password":"password123","name":"' + b"n" * pad + b'"}'
    assert len(exact) == LIMIT_BYTES
    r = api.post("/api/v1/users", content=exact, headers={"Content-Type": "application/json"})
    assert_json(r, 422, validation(("name", "must be between 1 and 100 characters")))


def test_order_route_before_auth(api: Api) -> None:
    """An unknown route answers 404 even without a token and with a bad body."""
    r = api.post("/api/v1/postz", content=b"{", headers={"Content-Type": "text/plain"})
    assert_json(r, 404, NOT_FOUND_ROUTE)


def test_order_auth_before_content_type_size_and_json(api: Api) -> None:
    """Without a token, a protected endpoint answers 401 whatever the body."""
    for headers, body in (({"Content-Type": "text/plain"}, b"x"),
                          ({"Content-Type": "application/json"}, b"{" * (LIMIT_BYTES + 1)),
                          ({"Content-Type": "application/json"}, b"{")):
        assert_json(api.post("/api/v1/posts", content=body, headers=headers), 401, UNAUTHORIZED)


def test_order_content_type_before_size_and_json(api: Api, reader: Account) -> None:
    """With a token, a wrong content type answers 415 even for an oversized or malformed body."""
    for body in (b"{" * (LIMIT_BYTES + 1), b"{"):
        r = api.post("/api/v1/posts", content=body, headers={"Content-Type": "text/plain"},
                     token=reader.access_token)
        assert_error(r, 415, *UNSUPPORTED)


def test_order_size_before_json_and_json_before_validation(api: Api, reader: Account) -> None:
    """Oversized beats malformed (413); malformed beats invalid fields (400)."""
    hdr = {"Content-Type": "application/json"}
    r = api.post("/api/v1/posts", content=b"[" * (LIMIT_BYTES + 1), headers=hdr, token=reader.access_token)
    assert_error(r, 413, *TOO_LARGE)
    r = api.post("/api/v1/posts", content=b'{"title":1,', headers=hdr, token=reader.access_token)
    assert_error(r, 400, *INVALID_JSON)


def test_patch_also_requires_json(api: Api, reader: Account) -> None:
    """PATCH endpoints apply the same content-type and JSON checks."""
    path = f"/api/v1/users/{reader.id}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = api.patch(path, content=b"name=x", headers=form, token=reader.access_token)
    assert_error(r, 415, *UNSUPPORTED)
    assert_error(api.patch(path, content=b"{", headers={"Content-Type": "application/json"},
                           token=reader.access_token), 400, *INVALID_JSON)


NUL = "must not contain the NUL character"


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("/api/v1/users", {"email": "a\u0000@b.co", "password": "pass\u0000word", "name": "N\u0000"},
         [("email", NUL), ("password", NUL), ("name", NUL)]),
        ("/api/v1/auth/login", {"email": "nul\u0000@example.com", "password": "whatever1"}, [("email", NUL)]),
        ("/api/v1/auth/refresh", {"refresh_token": "\u0000"}, [("refresh_token", NUL)]),
    ],
)
def test_nul_character_in_a_string_is_422(
    api: Api, path: str, body: dict[str, str], fields: list[tuple[str, str]]
) -> None:
    """A string with U+0000 (which PostgreSQL text cannot store) is a 422 field error, never a 500."""
    r = api.post(path, json_body=body)
    assert_json(r, 422, validation(*fields))


def test_nul_character_in_a_post_is_422(api: Api, reader: Account) -> None:
    """Creating a post whose title holds U+0000 is a 422 naming the field."""
    r = api.post("/api/v1/posts", json_body={"title": "a\u0000b", "body": "ok"}, token=reader.access_token)
    assert_json(r, 422, validation(("title", NUL)))
