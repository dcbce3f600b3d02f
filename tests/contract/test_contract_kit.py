"""The suite's own tools: the normaliser hides only what legitimately differs; the JWT forger signs."""

from __future__ import annotations

import base64
import hashlib
import hmac

from contract_kit import make_jwt, normalise


def test_normaliser_replaces_ids_timestamps_tokens_and_uptime_only() -> None:
    """Ids, timestamps, tokens and uptime become placeholders; every other byte is kept."""
    a = (b'{"user":{"id":12,"email":"a@x.io","name":"N","created_at":"2026-11-21T06:04:00.123Z"},'
         b'"tokens":{"access_token":"x.y.z","refresh_token":"abc"},"uptime_s":1.5,"author_id":3}')
    b = (b'{"user":{"id":99,"email":"b@x.io","name":"N","created_at":"2027-01-01T00:00:00.000Z"},'
         b'"tokens":{"access_token":"p.q.r","refresh_token":"def"},"uptime_s":12,"author_id":40}')
    assert normalise(a, {"a@x.io": "<e>"}) == normalise(b, {"b@x.io": "<e>"})
    assert normalise(a) != normalise(b)  # the emails still differ without a substitution
    assert normalise(b'{"name":"12","limit":20,"offset":0}') == b'{"name":"12","limit":20,"offset":0}'


def test_normaliser_keeps_differences_it_does_not_own() -> None:
    """A changed name, key order, spacing or an extra key survives normalisation."""
    base = b'{"id":1,"name":"N","created_at":"2026-11-21T06:04:00.123Z"}'
    for other in (b'{"id":1,"name":"N!","created_at":"2026-11-21T06:04:00.123Z"}',
                  b'{"name":"N","id":1,"created_at":"2026-11-21T06:04:00.123Z"}',
                  b'{"id":1, "name":"N","created_at":"2026-11-21T06:04:00.123Z"}',
                  b'{"id":1,"name":"N","created_at":"2026-11-21T06:04:00.12Z"}',
                  b'{"id":1,"name":"N","created_at":"2026-11-21T06:04:00.123Z","x":1}'):
        assert normalise(base) != normalise(other), other


def test_forged_jwt_is_a_real_hs256_token() -> None:
    """make_jwt produces header.payload.signature with a verifiable HMAC-SHA256 signature."""
    token = make_jwt({"sub": "1"}, "secret")
    head, payload, sig = token.split(".")
    assert base64.urlsafe_b64decode(head + "==") == b'{"alg":"HS256","typ":"JWT"}'
    expected = hmac.new(b"secret", f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expected
    assert make_jwt({"sub": "1"}, "secret", alg="none").endswith(".")
