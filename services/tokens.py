"""Access tokens (JWT HS256, built with hmac/hashlib) and opaque refresh tokens.

Only the exact header ``{"alg":"HS256","typ":"JWT"}`` is issued; verification accepts HS256 only (so
``none`` and every other alg are refused), compares signatures in constant time, and checks ``exp``
and ``typ``. Revocation (Redis) is checked by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_ID_RE = re.compile(r"[1-9][0-9]{0,17}")
_JTI_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says."""

    user_id: int
    jti: str
    exp: float


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: str) -> bytes:
    # Strict: alphabet checked (urlsafe_b64decode alone silently drops foreign characters).
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _sign(secret: str, signing_input: bytes) -> bytes:
    return _b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())


def issue_access(secret: str, user_id: int, ttl: int, now: int) -> str:
    """A signed access token for `user_id`, valid `ttl` seconds from `now`."""
    payload = orjson.dumps(
        {"sub": str(user_id), "jti": secrets.token_hex(16), "iat": now, "exp": now + ttl, "typ": "access"}
    )
    signing_input = _HEADER + b"." + _b64(payload)
    return (signing_input + b"." + _sign(secret, signing_input)).decode()


def verify(secret: str, token: str, now: float) -> Claims | None:
    """Claims of a valid, unexpired HS256 access token; None for anything else."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        return None
    head, body, sig = parts
    try:
        header: Any = orjson.loads(_unb64(head))
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            return None
        expected = _sign(secret, f"{head}.{body}".encode())
        if not hmac.compare_digest(expected, sig.encode()):
            return None
        payload: Any = orjson.loads(_unb64(body))
    except (binascii.Error, ValueError):  # bad base64, bad JSON (orjson's error is a ValueError)
        return None
    if not isinstance(payload, dict) or payload.get("typ") != "access":
        return None
    exp, sub, jti = payload.get("exp"), payload.get("sub"), payload.get("jti")
    # Any JSON number, as JavaScript's typeof; bool is excluded (a Python int subclass).
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
        return None
    if not isinstance(sub, str) or not _ID_RE.fullmatch(sub):
        return None
    if not isinstance(jti, str) or not _JTI_RE.fullmatch(jti):
        return None
    return Claims(int(sub), jti, exp)


def new_refresh_token() -> tuple[str, str]:
    """A new opaque refresh token and the sha256 hex that is stored in its place."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return token, refresh_hash(token)


def refresh_hash(token: str) -> str:
    """The stored form of a refresh token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
