"""Users: create, read, list, update, delete, with every validation and permission error (both services)."""

from __future__ import annotations

import httpx
import pytest
from contract_kit import (
    PASSWORD,
    TIMESTAMP,
    Account,
    Api,
    assert_error,
    assert_json,
    assert_no_content,
    compact,
    unique_email,
    validation,
)
from contract_stack import Stack

EMAIL_BAD = "must be a valid email address"
PASSWORD_LEN = "must be between 8 and 128 characters"
NAME_LEN = "must be between 1 and 100 characters"


def test_create_user_returns_201_user(api: Api) -> None:
    """POST /users answers 201 with the user representation (no tokens, no hash)."""
    email = unique_email("create")
    r = api.post("/api/v1/users", json_body={"email": email, "password": PASSWORD, "name": "Carol"})
    user = assert_json(r, 201)
    assert list(user) == ["id", "email", "name", "created_at", "updated_at"]
    assert user["email"] == email and user["name"] == "Carol" and TIMESTAMP.match(user["created_at"])
    assert api.get(f"/api/v1/users/{user['id']}").content == r.content


def test_create_user_duplicate_is_409(api: Api, reader: Account) -> None:
    """POST /users with a taken email answers 409."""
    r = api.post("/api/v1/users", json_body={"email": reader.email, "password": PASSWORD, "name": "X"})
    assert_error(r, 409, "conflict", "email already registered")


@pytest.mark.parametrize(("body", "fields"), [
    ({}, [("email", "is required"), ("password", "is required"), ("name", "is required")]),
    ({"email": 1, "password": None, "name": True},
     [("email", "must be a string"), ("password", "must be a string"), ("name", "must be a string")]),
    ({"email": "a@b", "password": "short", "name": ""}, [("email", EMAIL_BAD), ("password", PASSWORD_LEN),
                                                         ("name", NAME_LEN)]),
    ({"email": "a b@example.com", "password": "x" * 129, "name": "n" * 101},
     [("email", EMAIL_BAD), ("password", PASSWORD_LEN), ("name", NAME_LEN)]),
    ({"email": "x" * 243 + "@example.com", "password": PASSWORD, "name": "ok"}, [("email", EMAIL_BAD)]),
    ({"zeta": 1, "email": "ok@example.com", "alpha": 2, "password": PASSWORD, "name": "ok"},
     [("alpha", "unknown field"), ("zeta", "unknown field")]),
    ({"name": "ok", "extra": None}, [("email", "is required"), ("password", "is required"),
                                     ("extra", "unknown field")]),
    ([], [("body", "must be a JSON object")]),
    ("string", [("body", "must be a JSON object")]),
    (None, [("body", "must be a JSON object")]),
    (42, [("body", "must be a JSON object")]),
])
def test_create_user_validation(api: Api, body: object, fields: list[tuple[str, str]]) -> None:
    """Invalid bodies answer 422 listing declared fields in order, then unknown fields sorted by name."""
    r = api.post("/api/v1/users", content=compact(body), headers={"Content-Type": "application/json"})
    assert_json(r, 422, validation(*fields))


def test_lengths_count_code_points(api: Api) -> None:
    """Lengths are counted in code points: 8 emoji is a valid password, 100 emoji a valid name, 101 not."""
    emoji = "\U0001f600"

    def create(password: str, name: str) -> httpx.Response:
        body = {"email": unique_email(), "password": password, "name": name}
        return api.post("/api/v1/users", json_body=body)

    assert assert_json(create(emoji * 8, emoji * 100), 201)["name"] == emoji * 100
    assert_json(create(emoji * 7, emoji * 101), 422,
                validation(("password", PASSWORD_LEN), ("name", NAME_LEN)))
    # 129 code points is too long (one code point, one UTF-16 unit, two bytes each)...
    assert_json(create("é" * 129, "x"), 422, validation(("password", PASSWORD_LEN)))
    # ...and 128 two-unit characters (256 UTF-16 units, 512 bytes) is fine.
    assert_json(create(emoji * 128, "x"), 201)


def test_values_are_not_trimmed(api: Api) -> None:
    """Names keep surrounding whitespace; only emails are lowercased."""
    r = api.post("/api/v1/users", json_body={"email": unique_email("TRIM").upper(), "password": PASSWORD,
                                             "name": "  spaced  "})
    user = assert_json(r, 201)
    assert user["name"] == "  spaced  " and user["email"] == user["email"].lower()


@pytest.mark.parametrize("uid", ["0", "-1", "abc", "1.5", "1e3", "01", "1234567890123456789",
                                 "99999999999999999"])
def test_get_user_bad_or_unknown_id_is_404(api: Api, uid: str) -> None:
    """Ids outside ^[1-9][0-9]{0,17}$ or not in the table answer 404 user not found."""
    assert_error(api.get(f"/api/v1/users/{uid}"), 404, "not_found", "user not found")


def test_list_users_is_ascending_by_id(api: Api) -> None:
    """GET /users pages users by id ascending with limit/offset/next_offset."""
    api.register()
    page = assert_json(api.get("/api/v1/users?limit=100"), 200)
    assert list(page) == ["items", "limit", "offset", "next_offset"]
    ids = [u["id"] for u in page["items"]]
    assert ids == sorted(ids) and len(ids) >= 2
    assert all(list(u) == ["id", "email", "name", "created_at", "updated_at"] for u in page["items"])


def test_patch_user_updates_fields_and_updated_at(api: Api) -> None:
    """PATCH of one's own user changes the given fields, bumps updated_at, and a new password works."""
    acct = api.register()  # no pause needed: updated_at grows by 1 ms at least (docs/API.md)
    new_email = unique_email("moved")
    r = api.patch(f"/api/v1/users/{acct.id}", json_body={"name": "Renamed", "email": new_email.upper(),
                                                         "password": "another password"},
                  token=acct.access_token)
    user = assert_json(r, 200)
    assert user["name"] == "Renamed" and user["email"] == new_email
    assert user["created_at"] == acct.user["created_at"] and user["updated_at"] > acct.user["updated_at"]
    assert api.login(new_email, "another password").status_code == 200
    # Changing the password revokes no token.
    assert api.get("/api/v1/auth/me", token=acct.access_token).status_code == 200
    # Re-setting one's own email is not a conflict.
    r = api.patch(f"/api/v1/users/{acct.id}", json_body={"email": new_email}, token=acct.access_token)
    assert_json(r, 200)


def test_patch_user_validation(api: Api, reader: Account) -> None:
    """PATCH validates like create; no known field gives 'must contain at least one field'."""
    path, tok = f"/api/v1/users/{reader.id}", reader.access_token
    assert_json(api.patch(path, json_body={}, token=tok), 422,
                validation(("body", "must contain at least one field")))
    assert_json(api.patch(path, json_body={"foo": 1}, token=tok), 422, validation(("foo", "unknown field")))
    assert_json(api.patch(path, json_body={"name": "", "email": None}, token=tok), 422,
                validation(("name", NAME_LEN), ("email", "must be a string")))
    assert_json(api.patch(path, json_body=[1], token=tok), 422, validation(("body", "must be a JSON object")))


def test_patch_user_permissions(api: Api, reader: Account) -> None:
    """PATCH needs a token (401), an existing user (404, checked before ownership) and to be oneself (403)."""
    other = api.register()
    assert_error(api.patch(f"/api/v1/users/{other.id}", json_body={"name": "x"}), 401,
                 "unauthorized", "missing or invalid access token")
    assert_error(api.patch("/api/v1/users/99999999999", json_body={"name": "x"}, token=reader.access_token),
                 404, "not_found", "user not found")
    assert_error(api.patch(f"/api/v1/users/{other.id}", json_body={"name": "x"}, token=reader.access_token),
                 403, "forbidden", "you may only change your own user")
    # Validation comes before existence and ownership.
    assert_json(api.patch(f"/api/v1/users/{other.id}", json_body={"name": ""}, token=reader.access_token),
                422, validation(("name", NAME_LEN)))


def test_patch_user_email_conflict(api: Api, reader: Account) -> None:
    """PATCH to an email another user has answers 409."""
    acct = api.register()
    r = api.patch(f"/api/v1/users/{acct.id}", json_body={"email": reader.email.upper()},
                  token=acct.access_token)
    assert_error(r, 409, "conflict", "email already registered")


def test_delete_user_removes_posts_and_tokens(api: Api, reader: Account, stack: Stack) -> None:
    """DELETE of oneself answers 204; the user, their posts and refresh tokens are gone."""
    acct = api.register()
    post = api.create_post(acct)
    assert_error(api.delete(f"/api/v1/users/{acct.id}", token=reader.access_token), 403,
                 "forbidden", "you may only change your own user")
    assert_error(api.delete(f"/api/v1/users/{acct.id}"), 401,
                 "unauthorized", "missing or invalid access token")
    assert_no_content(api.delete(f"/api/v1/users/{acct.id}", token=acct.access_token))
    assert_error(api.get(f"/api/v1/users/{acct.id}"), 404, "not_found", "user not found")
    assert_error(api.get(f"/api/v1/posts/{post['id']}"), 404, "not_found", "post not found")
    assert stack.query("SELECT 1 FROM refresh_tokens WHERE user_id = $1", acct.id) == []
    r = api.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
    assert_error(r, 401, "invalid_token", "refresh token is invalid or expired")
    assert_error(api.delete("/api/v1/users/99999999999", token=reader.access_token), 404,
                 "not_found", "user not found")
