"""Helpers shared by the contract tests: the HTTP client wrapper, JWT crafting, the response normaliser.

Kept out of conftest.py so test modules can import them by name (`from contract_kit import ...`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

JSON_CT = "application/json; charset=utf-8"
PASSWORD = "correct horse battery staple"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def unique_email(tag: str = "u") -> str:
    """A fresh, valid, lowercase email so tests never collide in the shared database."""
    return f"{tag}-{secrets.token_hex(6)}@example.com"


def random_ip() -> str:
    """A fresh client address for X-Forwarded-For (the services run with TRUSTED_HOPS=1)."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"


def error_body(status_code: str, message: str, fields: list[tuple[str, str]] | None = None) -> bytes:
    """The exact bytes of an error response as docs/API.md specifies them."""
    err: dict[str, Any] = {"code": status_code, "message": message}
    if fields is not None:
        err["fields"] = [{"field": f, "message": m} for f, m in fields]
    return compact({"error": err})


def compact(value: Any) -> bytes:
    """JSON as both services must render it: compact, keys in insertion order, UTF-8 unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def validation(*fields: tuple[str, str]) -> bytes:
    """The exact bytes of a 422 response with `fields`."""
    return error_body("validation_failed", "request validation failed", list(fields))


NOT_FOUND_ROUTE = error_body("not_found", "route not found")
UNAUTHORIZED = error_body("unauthorized", "missing or invalid access token")
INVALID_CREDENTIALS = error_body("invalid_credentials", "invalid email or password")
INVALID_TOKEN = error_body("invalid_token", "refresh token is invalid or expired")


@dataclass
class Account:
    """A registered user and the tokens it got at registration."""

    id: int
    email: str
    name: str
    password: str
    access_token: str
    refresh_token: str
    user: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Api:
    """One service's base URL with a sync httpx client; every request carries a per-client address."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.base_url = base_url
        self.ip = random_ip()
        self.http = httpx.Client(base_url=base_url, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = None) -> httpx.Response:
        """Send one request; `json_body` is sent compact with `Content-Type: application/json`."""
        hdrs = {"X-Forwarded-For": self.ip}
        if json_body is not None:
            content = compact(json_body)
            hdrs["Content-Type"] = "application/json"
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        return self.http.request(method, path, content=content, headers=hdrs)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def register(self, email: str | None = None, name: str = "Tester", password: str = PASSWORD) -> Account:
        """Register a fresh user (asserting 201) and return it with its tokens."""
        email = email or unique_email(self.name)
        r = self.post("/api/v1/auth/register", json_body={"email": email, "password": password, "name": name})
        assert r.status_code == 201, (self.name, r.status_code, r.text)
        data = r.json()
        return Account(id=data["user"]["id"], email=data["user"]["email"], name=name, password=password,
                       access_token=data["tokens"]["access_token"],
                       refresh_token=data["tokens"]["refresh_token"], user=data["user"])

    def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.post("/api/v1/auth/login", json_body={"email": email, "password": password})

    def create_post(self, account: Account, title: str = "title", body: str = "body") -> dict[str, Any]:
        r = self.post("/api/v1/posts", json_body={"title": title, "body": body}, token=account.access_token)
        assert r.status_code == 201, (self.name, r.status_code, r.text)
        post: dict[str, Any] = r.json()
        return post


def assert_json(r: httpx.Response, status: int, body: bytes | None = None) -> Any:
    """Assert status, the exact JSON content type, optionally the exact body bytes; return parsed JSON."""
    assert r.status_code == status, (r.request.method, str(r.request.url), r.status_code, r.text)
    assert r.headers.get("content-type") == JSON_CT, r.headers
    if body is not None:
        assert r.content == body, (r.content, body)
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str, message: str) -> None:
    """Assert an error response, byte for byte."""
    assert_json(r, status, error_body(code, message))


def assert_no_content(r: httpx.Response) -> None:
    """A 204: no body and no content type."""
    assert r.status_code == 204, (r.status_code, r.text)
    assert r.content == b""
    assert "content-type" not in r.headers


def strong_etag(body: bytes) -> str:
    """The ETag both services send for a cacheable body (the etag package's strong form)."""
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()[:27]
    return f'"{len(body):x}-{digest}"'


# --- JWT crafting (the tests forge tokens with the session's secret to probe verification) ---

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload: dict[str, Any], secret: str, *, header: dict[str, Any] | None = None,
             alg: str = "HS256") -> str:
    """Sign `payload` with `secret` using `alg` (HS256, HS512 or none) and the given header."""
    header = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = f"{b64url(compact(header))}.{b64url(compact(payload))}"
    if alg == "none":
        return signing_input + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(sig)}"


def access_claims(user_id: int, *, ttl: int = 900, **overrides: Any) -> dict[str, Any]:
    """A valid access-token payload for `user_id` in the documented key order; overrides replace or drop."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "jti": secrets.token_hex(16), "iat": now,
                              "exp": now + ttl, "typ": "access"}
    for key, value in overrides.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


# --- normaliser for the differential tests ---

_TS = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"')
_IDS = re.compile(rb'"(id|author_id)":\d+')
_TOKENS = re.compile(rb'"(access_token|refresh_token)":"[^"]*"')
_UPTIME = re.compile(rb'"uptime_s":[0-9.eE+-]+')


def normalise(body: bytes, subs: dict[str, str] | None = None) -> bytes:
    """Replace what legitimately differs between two runs (ids, timestamps, tokens, uptime, given strings)."""
    for old, new in (subs or {}).items():
        body = body.replace(old.encode(), new.encode())
    body = _TS.sub(b'"<ts>"', body)
    body = _IDS.sub(rb'"\1":"<id>"', body)
    body = _TOKENS.sub(rb'"\1":"<token>"', body)
    return _UPTIME.sub(b'"uptime_s":"<uptime>"', body)


DRY_RUN_HEADER = "X-Strangler-Dry-Run"


def signed(secret: str, method: str, target: str, body: bytes = b"", t: int | None = None,
           nonce: str | None = None) -> dict[str, str]:  # fmt: skip
    """The header, computed here from docs/API.md (not with the gateway's code): an independent oracle."""
    t = int(time.time()) if t is None else t
    n = secrets.token_hex(16) if nonce is None else nonce
    message = f"{t}\n{n}\n{method}\n{target}\n{hashlib.sha256(body).hexdigest()}".encode()
    sig = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {DRY_RUN_HEADER: f"t={t},n={n},sig={sig}"}
