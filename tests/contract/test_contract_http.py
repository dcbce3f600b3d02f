"""Compression, cache validators and 304s, no-store, and CORS: the same bytes and headers on both services.

The stack runs both services with CORS on for ALLOWED_ORIGINS (credentials allowed), the default
compression threshold (1024 bytes) and CACHE_MAX_AGE=60 (contract_stack.HTTP). Raw bodies are read
without httpx's decoding, so a test sees exactly what was sent on the wire.
"""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime
from email.utils import format_datetime, formatdate, parsedate_to_datetime

import brotli
import httpx
import pytest
from contract_kit import (
    NOT_FOUND_ROUTE,
    PASSWORD,
    Account,
    Api,
    assert_json,
    strong_etag,
    unique_email,
)
from contract_stack import ALLOWED_ORIGINS, Stack

ORIGIN = ALLOWED_ORIGINS[0]
DECODE = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress}


def raw(api: Api, method: str, path: str, headers: dict[str, str] | None = None
        ) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (no content decoding)."""
    hdrs = {"X-Forwarded-For": api.ip, "Accept-Encoding": "identity", **(headers or {})}
    with api.http.stream(method, path, headers=hdrs) as r:
        body = b"".join(r.iter_raw())
    return r, body


def vary(r: httpx.Response) -> list[str]:
    return [v.strip() for v in r.headers.get("vary", "").split(",") if v.strip()]


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def post_of_size(api: Api, owner: Account, size: int) -> int:
    """A post whose GET body is exactly `size` bytes (uncompressed)."""
    post = api.create_post(owner, title="sized", body="x")
    _, body = raw(api, "GET", f"/api/v1/posts/{post['id']}")
    extra = size - len(body)
    assert extra >= 0, (size, len(body))
    r = api.patch(f"/api/v1/posts/{post['id']}", json_body={"body": "x" * (1 + extra)},
                  token=owner.access_token)
    assert r.status_code == 200, r.text
    return int(post["id"])


# --- compression ---


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_large_json_is_compressed_and_decodes_to_the_same_bytes(api: Api, coding: str) -> None:
    """A JSON body over the threshold is sent in the accepted coding; decoded, it is the identity body."""
    plain_r, plain = raw(api, "GET", "/openapi.json")
    assert "content-encoding" not in plain_r.headers and len(plain) > 1024
    r, body = raw(api, "GET", "/openapi.json", {"Accept-Encoding": coding})
    assert r.status_code == 200 and r.headers["content-encoding"] == coding, r.headers
    assert "Accept-Encoding" in vary(r) and "Accept-Encoding" in vary(plain_r)
    assert DECODE[coding](body) == plain
    assert len(body) < len(plain)


def test_threshold_is_respected_to_the_byte(api: Api, reader: Account) -> None:
    """1023 bytes go out as they are, 1024 bytes are compressed; both say Vary: Accept-Encoding."""
    for size, compressed in ((1023, False), (1024, True)):
        post_id = post_of_size(api, reader, size)
        _, plain = raw(api, "GET", f"/api/v1/posts/{post_id}")
        assert len(plain) == size
        r, body = raw(api, "GET", f"/api/v1/posts/{post_id}", {"Accept-Encoding": "gzip"})
        assert ("content-encoding" in r.headers) is compressed, (size, r.headers)
        assert (gzip.decompress(body) if compressed else body) == plain
        assert "Accept-Encoding" in vary(r)


def test_small_head_204_and_304_are_never_compressed(api: Api, reader: Account) -> None:
    """Tiny bodies, HEAD, 204 and 304 carry no Content-Encoding; 204 and 304 no Vary: Accept-Encoding."""
    gz = {"Accept-Encoding": "gzip, deflate, br"}
    small, _ = raw(api, "GET", "/health", gz)
    assert "content-encoding" not in small.headers and "Accept-Encoding" in vary(small)
    head, body = raw(api, "HEAD", "/openapi.json", gz)
    assert head.status_code == 200 and body == b"" and "content-encoding" not in head.headers
    post = api.create_post(reader)
    path = f"/api/v1/posts/{post['id']}"
    r, _ = raw(api, "GET", path, gz)
    not_modified, body = raw(api, "GET", path, {**gz, "If-None-Match": r.headers["etag"]})
    assert not_modified.status_code == 304 and body == b""
    assert "content-encoding" not in not_modified.headers and "Accept-Encoding" not in vary(not_modified)
    gone, body = raw(api, "DELETE", f"/api/v1/posts/{post['id']}",
                     {**gz, "Authorization": f"Bearer {reader.access_token}"})  # fmt: skip
    assert gone.status_code == 204 and body == b""
    assert "content-encoding" not in gone.headers and "Accept-Encoding" not in vary(gone)


ACCEPT_ENCODINGS = [
    "gzip", "deflate", "br", "gzip, deflate", "gzip, deflate, br", "br;q=0.5, gzip", "deflate, gzip;q=0.9",
    "*", "*;q=0", "identity", "identity;q=0", "gzip;q=0", "gzip;q=0, *", "GZIP", "br;q=1.0, gzip;q=1.0",
    "x-unknown", "deflate;q=abc, gzip;q=0.1", ", ,gzip", "gzip; q=0.5, deflate; q=0.5", "", "br;level=3",
]  # fmt: skip


def test_both_services_pick_the_same_coding(legacy: Api, new: Api) -> None:
    """For every Accept-Encoding, both services choose the same content coding (or none)."""
    chosen = {}
    for api in (legacy, new):
        chosen[api.name] = [
            raw(api, "GET", "/openapi.json", {"Accept-Encoding": value})[0].headers.get("content-encoding")
            for value in ACCEPT_ENCODINGS
        ]
    table = list(zip(ACCEPT_ENCODINGS, chosen["legacy"], chosen["new"], strict=True))
    assert chosen["new"] == chosen["legacy"], table
    assert chosen["legacy"][:3] == ["gzip", "deflate", "br"]


# --- cache headers and conditional requests ---


def test_user_is_cacheable_with_etag_and_last_modified(api: Api, reader: Account) -> None:
    """GET of a user: public max-age, the strong ETag of its body, Last-Modified from updated_at."""
    r = api.get(f"/api/v1/users/{reader.id}")
    user = assert_json(r, 200)
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["etag"] == strong_etag(r.content)
    moment = datetime.fromisoformat(user["updated_at"].replace("Z", "+00:00")).replace(microsecond=0)
    assert r.headers["last-modified"] == format_datetime(moment, usegmt=True)


def test_if_none_match_answers_304_until_the_user_changes(api: Api) -> None:
    """A matching If-None-Match (weak or in a list too) is 304 with the validators; a change: 200."""
    account = api.register()
    path = f"/api/v1/users/{account.id}"
    first = api.get(path)
    tag = first.headers["etag"]
    for header in (tag, f"W/{tag}", f'"nope", {tag}'):
        r, body = raw(api, "GET", path, {"If-None-Match": header})
        assert r.status_code == 304 and body == b"", header
        assert "content-type" not in r.headers
        assert r.headers["etag"] == tag and r.headers["cache-control"] == "public, max-age=60"
        assert r.headers.get("x-request-id")
    assert api.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert api.get(path, headers={"If-None-Match": tag, "Cache-Control": "no-cache"}).status_code == 200
    assert api.request("HEAD", path, headers={"If-None-Match": tag}).status_code == 304
    r = api.patch(path, json_body={"name": "Renamed"}, token=account.access_token)
    assert r.status_code == 200
    changed = api.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.headers["etag"] == strong_etag(changed.content)


def test_if_modified_since_uses_last_modified(api: Api, reader: Account) -> None:
    """If-Modified-Since at or after Last-Modified is 304, one second before is 200 (users only)."""
    path = f"/api/v1/users/{reader.id}"
    modified = parsedate_to_datetime(api.get(path).headers["last-modified"])
    same = format_datetime(modified, usegmt=True)
    assert api.get(path, headers={"If-Modified-Since": same}).status_code == 304
    earlier = formatdate(modified.timestamp() - 1, usegmt=True)
    assert api.get(path, headers={"If-Modified-Since": earlier}).status_code == 200


def test_post_is_cacheable_with_an_etag_only(api: Api, reader: Account) -> None:
    """GET of a post: ETag and max-age but no Last-Modified (its author's name changes apart from it)."""
    post = api.create_post(reader)
    path = f"/api/v1/posts/{post['id']}"
    r = api.get(path)
    assert r.headers["etag"] == strong_etag(r.content) and r.headers["cache-control"] == "public, max-age=60"
    assert "last-modified" not in r.headers
    assert api.get(path, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert api.get(path, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}).status_code == 200


def test_lists_and_errors_carry_no_validators(api: Api) -> None:
    """Pages and 404s have neither ETag nor Cache-Control (only single users and posts are cacheable)."""
    for path in ("/api/v1/users?limit=2", "/api/v1/posts?limit=2", "/api/v1/users/999999999999"):
        r = api.get(path)
        assert "etag" not in r.headers and "cache-control" not in r.headers, (path, r.headers)


def test_the_same_resource_has_the_same_validators_on_both(legacy: Api, new: Api) -> None:
    """Both services read one database: the same user or post gives byte-identical ETag and Last-Modified."""
    owner = legacy.register()
    post = legacy.create_post(owner)
    for path in (f"/api/v1/users/{owner.id}", f"/api/v1/posts/{post['id']}"):
        a, b = legacy.get(path), new.get(path)
        assert a.content == b.content
        for name in ("etag", "last-modified", "cache-control"):
            assert a.headers.get(name) == b.headers.get(name), (path, name)


def test_personal_answers_are_no_store(api: Api) -> None:
    """register, login, refresh and me (errors included) send Cache-Control: no-store."""
    email = unique_email()
    r = api.post("/api/v1/auth/register", json_body={"email": email, "password": PASSWORD, "name": "N"})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    login = api.login(email)
    assert login.status_code == 200 and login.headers["cache-control"] == "no-store"
    tokens = login.json()
    refreshed = api.post("/api/v1/auth/refresh", json_body={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.headers["cache-control"] == "no-store"
    me = api.get("/api/v1/auth/me", token=tokens["access_token"])
    assert me.status_code == 200 and me.headers["cache-control"] == "no-store"
    assert api.get("/api/v1/auth/me").headers["cache-control"] == "no-store"  # 401
    assert api.post("/api/v1/auth/login", json_body={}).headers["cache-control"] == "no-store"  # 422
    assert "cache-control" not in api.get("/api/v1/users?limit=1").headers


# --- CORS ---

PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH",
             "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip


@pytest.mark.parametrize("path", ["/api/v1/posts", "/api/v1/users/1", "/no/such/route"])
def test_preflight_from_an_allowed_origin(api: Api, path: str) -> None:
    """OPTIONS from an allowed origin asking for a method: 204 with the configured CORS answer."""
    r, body = raw(api, "OPTIONS", path, PREFLIGHT)
    assert r.status_code == 204 and body == b"", r.headers
    assert cors_headers(r) == {
        "access-control-allow-origin": ORIGIN,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET,HEAD,POST,PATCH,DELETE",
        "access-control-allow-headers": "Authorization,Content-Type,X-Request-Id",
        "access-control-max-age": "600",
        "access-control-expose-headers": "X-Request-Id,Retry-After,WWW-Authenticate",
    }
    assert vary(r) == ["Origin"] and r.headers.get("x-request-id")


@pytest.mark.parametrize("headers", [
    {**PREFLIGHT, "Origin": "https://evil.example"},
    {**PREFLIGHT, "Origin": ORIGIN.upper()},
    {"Origin": ORIGIN},
    {"Access-Control-Request-Method": "GET"},
])  # fmt: skip
def test_other_options_requests_stay_404_without_cors_headers(api: Api, headers: dict[str, str]) -> None:
    """A preflight from another origin, or an OPTIONS that is no preflight, is 404 with no CORS header."""
    r = api.request("OPTIONS", "/api/v1/posts", headers=headers)
    assert_json(r, 404, NOT_FOUND_ROUTE)
    assert cors_headers(r) == {} and vary(r) == ["Origin", "Accept-Encoding"]


def test_allowed_origin_reads_every_answer(api: Api, reader: Account) -> None:
    """Responses to an allowed origin, errors included, carry its CORS headers and Vary: Origin."""
    for path, status in ((f"/api/v1/users/{reader.id}", 200), ("/api/v1/users/0", 404), ("/nope", 404)):
        r = api.get(path, headers={"Origin": ALLOWED_ORIGINS[1]})
        assert r.status_code == status
        assert cors_headers(r) == {
            "access-control-allow-origin": ALLOWED_ORIGINS[1],
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "X-Request-Id,Retry-After,WWW-Authenticate",
        }, path
        assert vary(r) == ["Origin", "Accept-Encoding"]


def test_other_origins_get_no_cors_headers(api: Api) -> None:
    """Another origin, or none, gets no CORS header, but the answer still varies on Origin."""
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {}):
        r = api.get("/health", headers=headers)
        assert r.status_code == 200 and cors_headers(r) == {}, headers
        assert vary(r) == ["Origin", "Accept-Encoding"]


@pytest.mark.parametrize("name", ["legacy", "new"])
def test_wildcard_origin_and_cors_off(stack: Stack, name: str) -> None:
    """CORS_ALLOWED_ORIGINS=* answers any origin with `*` (no credentials); unset, CORS is off entirely."""
    with stack.variant(name, CORS_ALLOWED_ORIGINS="*", CORS_ALLOW_CREDENTIALS="") as run:
        api = Api(name, run.base_url)
        try:
            r, _ = raw(api, "OPTIONS", "/api/v1/posts", {**PREFLIGHT, "Origin": "https://any.example"})
            assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in r.headers
            r = api.get("/health", headers={"Origin": "https://any.example"})
            assert r.headers["access-control-allow-origin"] == "*"
            assert vary(r) == ["Origin", "Accept-Encoding"]
            assert cors_headers(api.get("/health")) == {}
        finally:
            api.close()
    with stack.variant(name, CORS_ALLOWED_ORIGINS="") as run:
        api = Api(name, run.base_url)
        try:
            assert_json(api.request("OPTIONS", "/api/v1/posts", headers=PREFLIGHT), 404, NOT_FOUND_ROUTE)
            r = api.get("/health", headers={"Origin": ORIGIN})
            assert cors_headers(r) == {} and vary(r) == ["Accept-Encoding"]
        finally:
            api.close()
