"""Dry run (new service only, docs/API.md "Dry run"): the gateway's way to shadow writes safely.

A correctly signed `X-Strangler-Dry-Run` request runs in a transaction that is rolled back and skips
Redis writes; any other value is 403. Legacy has no dry run (the gateway never sends it one), so these
tests use the `new` fixture only.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from contract_kit import PASSWORD, Api, assert_error, assert_json, unique_email
from contract_stack import Stack

HEADER = "X-Strangler-Dry-Run"


def signed(secret: str, method: str, target: str, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}\n{method}\n{target}".encode(), hashlib.sha256).hexdigest()
    return {HEADER: f"t={t},sig={sig}"}


def test_signed_write_is_applied_then_rolled_back(new: Api, stack: Stack) -> None:
    """A signed POST answers as usual with `X-Strangler-Dry-Run: applied`, and no row remains."""
    email = unique_email("dry")
    target = "/api/v1/users"
    r = new.post(target, json_body={"email": email, "password": PASSWORD, "name": "Dry"},
                 headers=signed(stack.dry_run_secret, "POST", target))
    user = assert_json(r, 201)
    assert r.headers.get(HEADER.lower()) == "applied" and user["email"] == email
    assert stack.query("SELECT 1 FROM users WHERE email = $1", email) == []


def test_signed_patch_changes_nothing(new: Api, stack: Stack) -> None:
    """A signed PATCH answers the patched user but the row keeps its old name."""
    acct = new.register(name="Before")
    target = f"/api/v1/users/{acct.id}"
    r = new.patch(target, json_body={"name": "After"}, headers=signed(stack.dry_run_secret, "PATCH", target),
                  token=acct.access_token)
    assert assert_json(r, 200)["name"] == "After" and r.headers.get(HEADER.lower()) == "applied"
    assert stack.query("SELECT name FROM users WHERE id = $1", acct.id)[0]["name"] == "Before"


def test_signed_logout_revokes_nothing(new: Api, stack: Stack) -> None:
    """Redis writes are skipped in a dry run: a dry-run logout leaves the token valid."""
    acct = new.register()
    target = "/api/v1/auth/logout"
    r = new.post(target, headers=signed(stack.dry_run_secret, "POST", target), token=acct.access_token)
    assert r.status_code == 204 and r.headers.get(HEADER.lower()) == "applied"
    assert new.get("/api/v1/auth/me", token=acct.access_token).status_code == 200


def test_signature_covers_the_query_string(new: Api, stack: Stack) -> None:
    """The signed target is path?query: a GET signed with its query is applied, without it refused."""
    target = "/api/v1/users?limit=1"
    ok = new.get(target, headers=signed(stack.dry_run_secret, "GET", target))
    assert_json(ok, 200)
    assert ok.headers.get(HEADER.lower()) == "applied"
    bad = new.get(target, headers=signed(stack.dry_run_secret, "GET", "/api/v1/users"))
    assert_error(bad, 403, "forbidden", "invalid dry-run signature")


def test_bad_dry_run_headers_are_403(new: Api, stack: Stack) -> None:
    """Wrong secret, wrong method, stale or future time, or a malformed value: 403, and nothing is written."""
    email = unique_email("dry403")
    target = "/api/v1/users"
    now = int(time.time())
    for headers in (signed("not the secret at all, not at all", "POST", target),
                    signed(stack.dry_run_secret, "PATCH", target),
                    signed(stack.dry_run_secret, "POST", target, now - 31),
                    signed(stack.dry_run_secret, "POST", target, now + 31),
                    {HEADER: "t=1,sig=zz"}, {HEADER: ""}, {HEADER: "yes"}):
        r = new.post(target, json_body={"email": email, "password": PASSWORD, "name": "X"}, headers=headers)
        assert_error(r, 403, "forbidden", "invalid dry-run signature")
    assert stack.query("SELECT 1 FROM users WHERE email = $1", email) == []
