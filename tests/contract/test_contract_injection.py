"""SQL injection strings in every kind of parameter: no 500, no extra rows, no SQL in any error (both)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from contract_kit import Account, Api, access_claims, assert_error, assert_json, make_jwt, validation
from contract_stack import Stack

PAYLOADS = [
    "' OR '1'='1",
    "1 OR 1=1",
    "1; DROP TABLE users; --",
    "'); DELETE FROM posts; --",
    "1' UNION SELECT password_hash, email FROM users --",
    "1)) OR ((1=1",
    "\\' OR 1=1 --",
    "$1",
    "' || pg_sleep(3) --",
    "1e1",
    "2 -- ",
]
LEAKS = ("syntax", "select", "sql", "postgres", "relation", "column", "pg_", "stack", "error:", "at ")
LIMIT_Q = ("limit", "must be an integer between 1 and 100")
OFFSET_Q = ("offset", "must be a non-negative integer")
AUTHOR_Q = ("author_id", "must be a positive integer")


def counts(stack: Stack) -> tuple[int, int, int]:
    row = stack.query("SELECT (SELECT count(*) FROM users) AS u, (SELECT count(*) FROM posts) AS p,"
                      " (SELECT count(*) FROM refresh_tokens) AS t")[0]
    return row["u"], row["p"], row["t"]


def no_leak(r: httpx.Response) -> None:
    """A refused request is a documented error: never 500, never a word of SQL or a stack trace."""
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        text = r.json()["error"]["message"].lower()
        assert not any(word in text for word in LEAKS), r.text


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_in_path_query_and_body(api: Api, reader: Account, stack: Stack, payload: str) -> None:
    """Injection strings are plain data: 404/422/401 as documented, rows unchanged, data stored verbatim."""
    seg = q = quote(payload, safe="")
    tok = reader.access_token
    before = counts(stack)
    for path, what in ((f"/api/v1/users/{seg}", "user"), (f"/api/v1/posts/{seg}", "post"),
                       (f"/api/v1/users/{seg}/posts", "user")):
        r = api.get(path)
        no_leak(r)
        assert_error(r, 404, "not_found", f"{what} not found")
    for method, what in (("PATCH", "user"), ("PATCH", "post"), ("DELETE", "user"), ("DELETE", "post")):
        body = None if method == "DELETE" else {"title": "t"} if what == "post" else {"name": "n"}
        r = api.request(method, f"/api/v1/{what}s/{seg}", json_body=body, token=tok)
        no_leak(r)
        assert_error(r, 404, "not_found", f"{what} not found")
    for query, field in ((f"limit={q}", LIMIT_Q), (f"offset={q}", OFFSET_Q), (f"author_id={q}", AUTHOR_Q)):
        r = api.get(f"/api/v1/posts?{query}")
        no_leak(r)
        assert_json(r, 422, validation(field))
    for email in (payload, f"a{payload}@example.com"):
        r = api.post("/api/v1/auth/login", json_body={"email": email, "password": payload})
        no_leak(r)
        assert r.status_code == 401, r.text
    r = api.post("/api/v1/auth/refresh", json_body={"refresh_token": payload})
    no_leak(r)
    assert r.status_code == 401
    r = api.post("/api/v1/users", json_body={"email": payload, "password": "password123", "name": payload})
    no_leak(r)
    assert r.status_code == 422
    assert counts(stack) == before
    # Stored as typed: the name round-trips byte for byte.
    r = api.patch(f"/api/v1/users/{reader.id}", json_body={"name": payload}, token=tok)
    assert assert_json(r, 200)["name"] == payload
    assert api.get(f"/api/v1/users/{reader.id}").json()["name"] == payload
    post = api.create_post(reader, title=payload, body=payload)
    assert post["title"] == payload and post["body"] == payload
    assert api.get(f"/api/v1/posts/{post['id']}").json()["title"] == payload
    after = counts(stack)
    assert after == (before[0], before[1] + 1, before[2])


def test_injection_in_token_subject(api: Api, reader: Account, stack: Stack) -> None:
    """A correctly signed token whose sub is not a path id is 401 unauthorized, without a leak."""
    for sub in ("1 OR 1=1", f"{reader.id}; DROP TABLE users", "0", "-1", "abc", "1" * 30):
        r = api.get("/api/v1/auth/me", token=make_jwt(access_claims(reader.id, sub=sub), stack.jwt_secret))
        no_leak(r)
        assert_error(r, 401, "unauthorized", "missing or invalid access token")
