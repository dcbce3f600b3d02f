"""Dry run (new service only, docs/API.md "Dry run"): the gateway's way to shadow writes safely.

A correctly signed `X-Strangler-Dry-Run` request runs in a transaction that is rolled back and skips
Redis writes; any other value is 403. Legacy has no dry run (the gateway never sends it one), so these
tests use the `new` fixture only.
"""

from __future__ import annotations

import time

from contract_kit import PASSWORD, Api, assert_error, assert_json, compact, signed, unique_email
from contract_stack import Stack

HEADER = "X-Strangler-Dry-Run"


def test_signed_write_is_applied_then_rolled_back(new: Api, stack: Stack) -> None:
    """A signed POST answers as usual with `X-Strangler-Dry-Run: applied`, and no row remains."""
    email = unique_email("dry")
    target = "/api/v1/users"
    body = {"email": email, "password": PASSWORD, "name": "Dry"}
    r = new.post(target, json_body=body, headers=signed(stack.dry_run_secret, "POST", target, compact(body)))
    user = assert_json(r, 201)
    assert r.headers.get(HEADER.lower()) == "applied" and user["email"] == email
    assert stack.query("SELECT 1 FROM users WHERE email = $1", email) == []


def test_signed_patch_changes_nothing(new: Api, stack: Stack) -> None:
    """A signed PATCH answers the patched user but the row keeps its old name."""
    acct = new.register(name="Before")
    target = f"/api/v1/users/{acct.id}"
    body = {"name": "After"}
    headers = signed(stack.dry_run_secret, "PATCH", target, compact(body))
    r = new.patch(target, json_body=body, headers=headers,
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
    """Wrong secret, method, body or nonce format, stale or future time, or a malformed value: 403, and
    nothing is written."""
    email = unique_email("dry403")
    target = "/api/v1/users"
    body = {"email": email, "password": PASSWORD, "name": "X"}
    raw = compact(body)
    now = int(time.time())
    for headers in (signed("not the secret at all, not at all", "POST", target, raw),
                    signed(stack.dry_run_secret, "PATCH", target, raw),
                    signed(stack.dry_run_secret, "POST", target, compact({**body, "name": "Y"})),
                    signed(stack.dry_run_secret, "POST", target, raw, now - 31),
                    signed(stack.dry_run_secret, "POST", target, raw, now + 31),
                    signed(stack.dry_run_secret, "POST", target, raw, nonce="not-hex"),
                    {HEADER: "t=1,sig=zz"}, {HEADER: ""}, {HEADER: "yes"}):
        r = new.post(target, json_body=body, headers=headers)
        assert_error(r, 403, "forbidden", "invalid dry-run signature")
    assert stack.query("SELECT 1 FROM users WHERE email = $1", email) == []


def test_a_signature_is_single_use(new: Api, stack: Stack) -> None:
    """The same signed request sent twice: applied once, then 403 (a seen signature cannot be replayed)."""
    body = {"email": "nobody@example.com", "password": "wrong password, once"}
    target = "/api/v1/auth/login"
    headers = signed(stack.dry_run_secret, "POST", target, compact(body))
    first = new.post(target, json_body=body, headers=headers)
    assert first.status_code == 401 and first.headers.get(HEADER.lower()) == "applied"
    again = new.post(target, json_body=body, headers=headers)
    assert_error(again, 403, "forbidden", "invalid dry-run signature")


def test_a_signature_does_not_authorise_another_body(new: Api, stack: Stack) -> None:
    """A signature made for one body, sent with another: 403 and nothing stored (the HMAC covers the body)."""
    target = "/api/v1/users"
    signed_body = {"email": unique_email("dryA"), "password": PASSWORD, "name": "A"}
    other = {"email": unique_email("dryB"), "password": PASSWORD, "name": "B"}
    headers = signed(stack.dry_run_secret, "POST", target, compact(signed_body))
    r = new.post(target, json_body=other, headers=headers)
    assert_error(r, 403, "forbidden", "invalid dry-run signature")
    assert stack.query("SELECT 1 FROM users WHERE email = $1", other["email"]) == []
