"""redact.py and dryrun.py: secrets never stored; dry-run signatures in the documented format."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from proxy.shadow import dryrun
from proxy.shadow.redact import REDACTED, Redactor

R = Redactor()


def test_credential_headers_redacted() -> None:
    """Authorization, Cookie, Set-Cookie and headers named like a secret lose their values."""
    out = dict(R.headers([("Authorization", "Bearer abc"), ("Cookie", "s=1"), ("Set-Cookie", "s=2"),
                          ("X-Api-Key", "k1"), ("Accept", "text/plain")]))  # fmt: skip
    assert out == {"authorization": REDACTED, "cookie": REDACTED, "set-cookie": REDACTED,
                   "x-api-key": REDACTED, "accept": "text/plain"}  # fmt: skip


def test_json_members_redacted_recursively() -> None:
    """Members whose name contains a configured word are replaced at any depth."""
    doc = {"user": {"name": "a", "password": "p1"}, "tokens": {"access_token": "t1"},
           "list": [{"apiKey": "k"}], "keep": 1}  # fmt: skip
    out = R.value(doc)
    assert out == {"user": {"name": "a", "password": REDACTED}, "tokens": REDACTED,
                   "list": [{"apiKey": REDACTED}], "keep": 1}  # fmt: skip


def test_query_string_redacted() -> None:
    """Query parameters named like a secret are redacted; others are untouched."""
    assert (
        R.path_qs("/a?x=1&token=abc&Secret_Key=zz") == "/a?x=1&token=%5BREDACTED%5D&Secret_Key=%5BREDACTED%5D"
    )
    assert R.path_qs("/a") == "/a"


def test_text_and_truncated_json_redacted() -> None:
    """Unparseable bodies are scanned textually: JSON pairs (even cut off), form pairs, bearer tokens."""
    text = R.body(b'{"name":"x","refresh_token":"SECRET1","password":"SECR', "application/json", 1000)
    assert "SECRET1" not in text and 'SECR"' not in text and "SECR" not in text.replace(REDACTED, "")
    form = R.body(b"user=a&password=hunter2&x=1", "application/x-www-form-urlencoded", 1000)
    assert "hunter2" not in form and "x=1" in form
    assert "abc.def" not in R.text("auth was Bearer abc.def ok")


def test_configured_words() -> None:
    """The redact list is configurable."""
    custom = Redactor(["ssn"])
    assert custom.value({"ssn": "1", "password": "p"}) == {"ssn": REDACTED, "password": "p"}


def test_difference_values_under_secret_paths_hidden() -> None:
    """A stored difference under a secret path keeps its path and kind but not the values."""
    d = R.difference({"path": "$.tokens.access_token", "kind": "changed", "control": "a", "candidate": "b"})
    assert d == {
        "path": "$.tokens.access_token",
        "kind": "changed",
        "control": REDACTED,
        "candidate": REDACTED,
    }
    sub = R.difference({"path": "$.user", "kind": "missing", "control": {"password": "x"}, "candidate": None})
    assert orjson.dumps(sub).find(b'"x"') == -1


def test_dry_run_signature_format() -> None:
    """sign() produces t=<unix>,n=<nonce>,sig=<hex HMAC-SHA256 of t, nonce, METHOD, path?query, body hash>;
    verify() returns the nonce for that request only: not for another time, secret, method, target or body."""
    body = b'{"name":"a"}'
    nonce = "0123456789abcdef0123456789abcdef"
    value = dryrun.sign(b"s3cret", "post", "/api/v1/users?x=1", body, now=1_700_000_000, nonce=nonce)
    digest = hashlib.sha256(body).hexdigest()
    message = f"1700000000\n{nonce}\nPOST\n/api/v1/users?x=1\n{digest}".encode()
    expected = hmac.new(b"s3cret", message, hashlib.sha256).hexdigest()
    assert value == f"t=1700000000,n={nonce},sig={expected}"
    assert dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=1", body, now=1_700_000_010) == nonce
    assert dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=1", body, now=1_700_000_031) is None
    assert dryrun.verify(b"other", value, "POST", "/api/v1/users?x=1", body, now=1_700_000_000) is None
    assert dryrun.verify(b"s3cret", value, "PATCH", "/api/v1/users?x=1", body, now=1_700_000_000) is None
    assert dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=2", body, now=1_700_000_000) is None
    assert dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=1", b"{}", now=1_700_000_000) is None


def test_dry_run_nonces_are_fresh() -> None:
    """Two signatures of the same request carry different nonces (the service accepts each only once)."""
    first, second = (dryrun.sign(b"k", "POST", "/p", b"", now=1) for _ in range(2))
    assert first != second and first.split(",")[1] != second.split(",")[1]


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcwMDAwMDAwMH0.c2lnbmF0dXJlLXBhcnQtb2YtaXQ"
)
TOKEN = "q8ZrT2xVb9LmN4pKs7WcYd1FhJ3gQ0eR"  # 32 random-looking base64url characters


def test_secrets_found_by_value_whatever_their_name() -> None:
    """A JWT, a token-like run or a 64-hex digest is masked under any key and inside free text; so is a
    secret used as an object key. Ordinary values (ids, UUIDs, timestamps, paths, words) are kept."""
    doc = {"data": JWT, "note": f"use {TOKEN} now", "digest": "ab" * 32, TOKEN: True,
           "id": 9007199254740993, "uuid": "123e4567-e89b-42d3-a456-426614174000",
           "created_at": "2026-12-06T15:30:42.123Z", "path": "/api/v1/posts/1234567890123456789",
           "title": "An ordinary sentence that is long enough to matter"}  # fmt: skip
    out = R.value(doc)
    rendered = orjson.dumps(out).decode()
    for secret in (JWT, TOKEN, "ab" * 32):
        assert secret not in rendered
    assert out["data"].startswith("[REDACTED jwt ") and out["note"].startswith("use [REDACTED token ")
    assert any(k.startswith("[REDACTED token ") for k in out)
    for kept in ("id", "uuid", "created_at", "path", "title"):
        assert out[kept] == doc[kept]


def test_leaks_found_by_the_abuse_test_are_closed() -> None:
    """passwd, session_id, auth.bearer, a JWT under "jwt", an X-Session header: none is stored."""
    doc = {"passwd": "hunter22", "session_id": "s-1", "auth": {"bearer": "b-1"}, "jwt": "x.y.z"}
    assert R.value(doc) == {"passwd": REDACTED, "session_id": REDACTED, "auth": {"bearer": REDACTED},
                            "jwt": REDACTED}  # fmt: skip
    headers = dict(R.headers([("X-Session", "abc"), ("X-Forwarded-For", "203.0.113.9")]))
    assert headers["x-session"] == REDACTED
    d = R.difference({"path": "headers.x-session", "kind": "changed", "control": "a", "candidate": "b"})
    assert d["control"] == d["candidate"] == REDACTED


def test_personal_data_keeps_the_diff_meaningful() -> None:
    """E-mail addresses (anywhere) and personal fields become tagged placeholders: equal values share a
    tag, different values do not, and no address is stored."""
    out = R.value({"email": "alice@example.com", "bio": "write to bob@example.org", "phone": 5551234})
    rendered = orjson.dumps(out).decode()
    assert "alice" not in rendered and "bob@" not in rendered and "5551234" not in rendered
    assert out["email"].startswith("[REDACTED personal ") and "[REDACTED email " in out["bio"]
    path = {"path": "$.user.email", "kind": "changed"}
    same = R.difference({**path, "control": "a@x.io", "candidate": "a@x.io"})
    other = R.difference({**path, "control": "a@x.io", "candidate": "b@x.io"})
    assert same["control"] == same["candidate"] and other["control"] != other["candidate"]
    assert other["control"] == same["control"]  # one value, one tag, within the process
    headers = dict(R.headers([("X-Forwarded-For", "203.0.113.9")]))
    assert headers["x-forwarded-for"].startswith("[REDACTED personal ")


def test_personal_words_are_configurable() -> None:
    """The personal list is configurable; e-mail addresses are masked whatever it says."""
    custom = Redactor(personal=["ssn"])
    out = custom.value({"ssn": "123-45-6789", "email": "plain", "contact": "c@example.com"})
    assert out["ssn"].startswith("[REDACTED personal ") and out["email"] == "plain"
    assert out["contact"].startswith("[REDACTED email ")
