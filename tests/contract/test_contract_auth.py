"""Auth flows on each service: register, login, refresh rotation, logout, me, and their error cases."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from contract_kit import (
    INVALID_CREDENTIALS,
    INVALID_TOKEN,
    PASSWORD,
    TIMESTAMP,
    UNAUTHORIZED,
    Api,
    assert_error,
    assert_json,
    assert_no_content,
    compact,
    unique_email,
    validation,
)
from contract_stack import Stack

TOKENS = re.compile(
    rb'\{"access_token":"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+","token_type":"Bearer",'
    rb'"expires_in":900,"refresh_token":"[A-Za-z0-9_-]{43}"\}'
)


def jwt_part(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_register_returns_user_and_tokens(api: Api) -> None:
    """Register answers 201 with the user (email lowercased) then a token pair, in documented key order."""
    email = unique_email("Reg").replace("reg", "REG")
    r = api.post("/api/v1/auth/register", json_body={"email": email, "password": PASSWORD, "name": "Zoë"})
    data = assert_json(r, 201)
    user = data["user"]
    assert list(data) == ["user", "tokens"]
    assert list(user) == ["id", "email", "name", "created_at", "updated_at"]
    assert user["email"] == email.lower() and user["name"] == "Zoë"
    assert isinstance(user["id"], int) and user["id"] > 0
    assert TIMESTAMP.match(user["created_at"]) and user["created_at"] == user["updated_at"]
    tokens = r.content[r.content.index(b'"tokens":') + 9:-1]
    assert TOKENS.fullmatch(tokens), tokens
    assert b"password" not in r.content


def test_access_token_shape(api: Api) -> None:
    """The access token is HS256 with the exact header and the documented claims in order."""
    acct = api.register()
    assert jwt_part(acct.access_token, 0) == b'{"alg":"HS256","typ":"JWT"}'
    claims = json.loads(jwt_part(acct.access_token, 1))
    assert list(claims) == ["sub", "jti", "iat", "exp", "typ"]
    assert claims["sub"] == str(acct.id) and claims["typ"] == "access"
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert claims["exp"] - claims["iat"] == 900


def test_register_duplicate_email_is_409_case_insensitively(api: Api) -> None:
    """Registering an email already taken (in any case) answers 409 conflict."""
    acct = api.register()
    r = api.post("/api/v1/auth/register",
                 json_body={"email": acct.email.upper(), "password": PASSWORD, "name": "Dup"})
    assert_error(r, 409, "conflict", "email already registered")


def test_login_returns_tokens_with_any_email_case(api: Api) -> None:
    """Login with the right password (email in any case) answers 200 with a fresh token pair."""
    acct = api.register()
    r = api.login(acct.email.upper())
    assert_json(r, 200)
    assert TOKENS.fullmatch(r.content), r.content
    assert r.json()["refresh_token"] != acct.refresh_token


def test_login_wrong_password_and_unknown_email_are_401(api: Api) -> None:
    """A wrong password and an unknown email give the same 401 invalid_credentials."""
    acct = api.register()
    assert_json(api.login(acct.email, "wrong password!"), 401, INVALID_CREDENTIALS)
    assert_json(api.login(unique_email("nobody")), 401, INVALID_CREDENTIALS)


def test_login_only_checks_presence_and_type(api: Api) -> None:
    """Login validates only required + string: a malformed email is 401, a missing or non-string one 422."""
    r = api.post("/api/v1/auth/login", json_body={"email": "not-an-email", "password": "x"})
    assert_json(r, 401, INVALID_CREDENTIALS)
    r = api.post("/api/v1/auth/login", json_body={"password": 5})
    assert_json(r, 422, validation(("email", "is required"), ("password", "must be a string")))


def test_me_returns_the_token_owner(api: Api) -> None:
    """GET /auth/me with a valid token returns the user, identical to GET /users/{id}."""
    acct = api.register()
    r = api.get("/api/v1/auth/me", token=acct.access_token)
    assert_json(r, 200)
    assert r.content == api.get(f"/api/v1/users/{acct.id}").content == compact(acct.user)


def test_me_without_or_with_garbage_token_is_401_with_challenge(api: Api) -> None:
    """Missing, malformed or non-Bearer credentials answer 401 unauthorized with WWW-Authenticate: Bearer."""
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer not.a.jwt"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer a.b.c.d"}):
        r = api.get("/api/v1/auth/me", headers=headers)
        assert_json(r, 401, UNAUTHORIZED)
        assert r.headers.get("www-authenticate") == "Bearer", headers


def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    """The Authorization scheme is matched case-insensitively."""
    acct = api.register()
    r = api.get("/api/v1/auth/me", headers={"Authorization": f"bEaReR {acct.access_token}"})
    assert_json(r, 200)


def test_refresh_rotates_and_revokes_the_old_token(api: Api) -> None:
    """Refresh answers a new pair; the old refresh token no longer works, the new one does."""
    acct = api.register()
    r = api.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
    assert_json(r, 200)
    assert TOKENS.fullmatch(r.content), r.content
    rotated = r.json()
    assert rotated["refresh_token"] != acct.refresh_token
    assert api.get("/api/v1/auth/me", token=rotated["access_token"]).status_code == 200
    again = api.post("/api/v1/auth/refresh", json_body={"refresh_token": acct.refresh_token})
    assert_json(again, 401, INVALID_TOKEN)
    newest = api.post("/api/v1/auth/refresh", json_body={"refresh_token": rotated["refresh_token"]})
    assert_json(newest, 200)


def test_refresh_token_is_stored_only_as_its_hash(api: Api, stack: Stack) -> None:
    """The refresh_tokens table holds the sha256 hex of the token, never the token itself."""
    acct = api.register()
    rows = stack.query("SELECT token_hash FROM refresh_tokens WHERE user_id = $1", acct.id)
    assert [r["token_hash"] for r in rows] == [hashlib.sha256(acct.refresh_token.encode()).hexdigest()]


def test_refresh_errors(api: Api) -> None:
    """An unknown refresh token is 401 invalid_token; a missing or non-string one is 422."""
    assert_json(api.post("/api/v1/auth/refresh", json_body={"refresh_token": "A" * 43}), 401, INVALID_TOKEN)
    assert_json(api.post("/api/v1/auth/refresh", json_body={}), 422,
                validation(("refresh_token", "is required")))
    assert_json(api.post("/api/v1/auth/refresh", json_body={"refresh_token": None}), 422,
                validation(("refresh_token", "must be a string")))


def test_logout_revokes_access_and_all_refresh_tokens(api: Api) -> None:
    """Logout answers 204; that access token and every refresh token of the user stop working."""
    acct = api.register()
    second = api.login(acct.email).json()
    assert_no_content(api.post("/api/v1/auth/logout", token=acct.access_token))
    assert_json(api.get("/api/v1/auth/me", token=acct.access_token), 401, UNAUTHORIZED)
    for refresh in (acct.refresh_token, second["refresh_token"]):
        r = api.post("/api/v1/auth/refresh", json_body={"refresh_token": refresh})
        assert_json(r, 401, INVALID_TOKEN)
    # Only the presented access token is revoked; a second session's access token lives until it expires.
    assert api.get("/api/v1/auth/me", token=second["access_token"]).status_code == 200


def test_logout_ignores_an_optional_json_body(api: Api) -> None:
    """Logout with a JSON body still answers 204."""
    acct = api.register()
    assert_no_content(api.post("/api/v1/auth/logout", json_body={"all": True}, token=acct.access_token))


def test_logout_requires_a_token(api: Api) -> None:
    """Logout without a valid token answers 401 unauthorized."""
    assert_json(api.post("/api/v1/auth/logout"), 401, UNAUTHORIZED)


def test_logout_twice_is_401(api: Api) -> None:
    """A revoked access token cannot log out again."""
    acct = api.register()
    assert_no_content(api.post("/api/v1/auth/logout", token=acct.access_token))
    assert_json(api.post("/api/v1/auth/logout", token=acct.access_token), 401, UNAUTHORIZED)
