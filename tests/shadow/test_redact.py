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
    """sign() produces t=<unix>,sig=<hex HMAC-SHA256 of t, METHOD, path?query>, verify() checks it."""
    value = dryrun.sign(b"s3cret", "post", "/api/v1/users?x=1", now=1_700_000_000)
    expected = hmac.new(b"s3cret", b"1700000000\nPOST\n/api/v1/users?x=1", hashlib.sha256).hexdigest()
    assert value == f"t=1700000000,sig={expected}"
    assert dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=1", now=1_700_000_010)
    assert not dryrun.verify(b"s3cret", value, "POST", "/api/v1/users?x=1", now=1_700_000_031)
    assert not dryrun.verify(b"other", value, "POST", "/api/v1/users?x=1", now=1_700_000_000)
    assert not dryrun.verify(b"s3cret", value, "PATCH", "/api/v1/users?x=1", now=1_700_000_000)
