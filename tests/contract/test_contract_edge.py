"""The HTTP edge (docs/API.md, "The HTTP edge"): what happens below the application, on both services.

Head size limit, requests the parser refuses, Content-Encoding, Server, If-None-Match: *, and the query
and path details a differential fuzz found. Raw sockets where httpx would refuse to send the request.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import socket
from urllib.parse import urlsplit

import asyncpg
import pytest
from contract_kit import (
    JSON_CT,
    UUID4,
    Account,
    Api,
    access_claims,
    assert_error,
    assert_json,
    b64url,
    compact,
    error_body,
    validation,
)
from contract_stack import Stack

LIMIT = 65536
HEADERS_TOO_LARGE = error_body("header_too_large", "request headers exceed 65535 bytes")
BAD_REQUEST = error_body("bad_request", "malformed HTTP request")
NO_ENCODING = ("unsupported_media_type", "Content-Encoding is not supported; send the body uncompressed")
UNSUPPORTED = ("unsupported_media_type", "Content-Type must be application/json")


def exchange(api: Api, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection and read the answer to EOF (requests say Connection: close)."""
    url = urlsplit(api.base_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def request(target: str, headers: list[tuple[str, str]], body: bytes = b"", method: str = "GET") -> bytes:
    """A raw HTTP/1.1 request; Host and Connection: close come first."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def head_of_size(total: int) -> bytes:
    """A GET /api/v1/users whose head counts exactly `total` bytes (target + names + values)."""
    target = "/api/v1/users?limit=1"
    fixed = len(target) + len("Host127.0.0.1") + len("Connectionclose") + len("Cookie")
    return request(target, [("Cookie", "c" * (total - fixed))])


def test_head_just_under_the_limit_is_served(api: Api) -> None:
    """A request head of 65535 bytes (target + header names and values) is served; a 12 KB Cookie too."""
    status, headers, _ = exchange(api, head_of_size(LIMIT - 1))
    assert status == 200 and headers["content-type"] == JSON_CT
    r = api.get("/api/v1/users?limit=1", headers={"Cookie": "session=" + "x" * 12 * 1024})
    assert_json(r, 200)


# Just over: Node answers as soon as the budget is blown and closes; a client still sending a much larger
# head then gets a reset instead of the answer (the kernel drops it), on the legacy side only.
@pytest.mark.parametrize("total", [LIMIT, LIMIT + 1, LIMIT + 100])
def test_head_at_or_over_the_limit_is_431_json(api: Api, total: int) -> None:
    """A request head of 65536 bytes or more is 431 with the contract's JSON error, connection closed."""
    status, headers, body = exchange(api, head_of_size(total))
    assert (status, headers["content-type"], body) == (431, JSON_CT, HEADERS_TOO_LARGE)
    assert headers.get("connection") == "close"
    assert "x-request-id" not in headers and "server" not in headers


def test_long_request_target_is_431_json(api: Api) -> None:
    """The target counts towards the same budget: a 70 KB query string is 431 JSON."""
    status, headers, body = exchange(api, request("/api/v1/users?" + "a" * 70000, []))
    assert (status, headers["content-type"], body) == (431, JSON_CT, HEADERS_TOO_LARGE)


def test_header_count_is_not_limited(api: Api) -> None:
    """3000 small headers (Node would drop all after 2000 by default) are fine within the byte budget."""
    many = [(f"X-H{i}", "v") for i in range(3000)]
    status, _, body = exchange(api, request("/api/v1/users?limit=abc", many))
    assert (status, body) == (422, validation(("limit", "must be an integer between 1 and 100")))


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
        [("Content-Type", "application/json"), ("Content-Type", "application/json")],
        [("Host", "example.com")],  # a second Host after request()'s own
        [("User-Agent", "a"), ("user-agent", "b")],
        [("X-Nul", "a\x00b")],
    ],
    ids=["content-type-differs", "content-type-same", "host", "user-agent-any-case", "nul-in-value"],
)
def test_unparseable_request_is_400_json(api: Api, headers: list[tuple[str, str]]) -> None:
    """A repeated singleton header or a NUL in a value is 400 bad_request in JSON (never plain text)."""
    status, got, body = exchange(api, request("/api/v1/users", headers, b"{}", "POST"))
    assert (status, got["content-type"], body) == (400, JSON_CT, BAD_REQUEST)
    assert got.get("connection") == "close" and "server" not in got


def test_repeated_ordinary_header_is_fine(api: Api) -> None:
    """Headers outside the singleton list (Accept, X-Forwarded-For) may repeat."""
    status, _, _ = exchange(api, request("/api/v1/users?limit=1", [("Accept", "a/b"), ("Accept", "c/d")]))
    assert status == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "identity, gzip"])
def test_content_encoding_on_a_body_is_415(api: Api, encoding: str) -> None:
    """A body endpoint refuses any Content-Encoding but identity (uncompressed body or not): never a 500."""
    body = compact({"email": "a@example.com"})
    r = api.post("/api/v1/users", content=body,
                 headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    assert_error(r, 415, *NO_ENCODING)


def test_really_compressed_body_is_415_too(api: Api) -> None:
    """A gzip body is not decompressed either: 415, the same answer as for a plain one."""
    r = api.post("/api/v1/users", content=gzip.compress(b"{}"),
                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert_error(r, 415, *NO_ENCODING)


@pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
def test_identity_encoding_is_read_normally(api: Api, encoding: str) -> None:
    """Content-Encoding identity (or empty) is no encoding: the body is validated as usual."""
    r = api.post("/api/v1/users", content=b"{}",
                 headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    required = (("email", "is required"), ("password", "is required"), ("name", "is required"))
    assert_json(r, 422, validation(*required))


def test_content_type_is_checked_before_content_encoding(api: Api) -> None:
    """Wrong type and an encoding: the Content-Type message (415) comes first."""
    headers = {"Content-Type": "text/plain", "Content-Encoding": "gzip"}
    r = api.post("/api/v1/users", content=b"{}", headers=headers)
    assert_error(r, 415, *UNSUPPORTED)


def test_content_encoding_is_ignored_where_no_body_is_read(api: Api, reader: Account) -> None:
    """GET and logout read no body: a Content-Encoding there changes nothing."""
    assert_json(api.get("/api/v1/users?limit=1", headers={"Content-Encoding": "gzip"}), 200)
    r = api.get("/api/v1/auth/me", headers={"Content-Encoding": "gzip"}, token=reader.access_token)
    assert_json(r, 200)


def test_no_server_header(api: Api) -> None:
    """No response names the server software (200, 404, 422, 304)."""
    for r in (api.get("/health"), api.get("/nowhere"), api.get("/api/v1/users?limit=0"),
              api.get("/api/v1/users?limit=1", headers={"If-None-Match": "*"})):
        assert "server" not in r.headers, (r.status_code, r.headers)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_star_is_304(api: Api, method: str) -> None:
    """If-None-Match: * on a 2xx GET/HEAD is 304: no body, no Content-Type, X-Request-Id kept."""
    r = api.request(method, "/api/v1/users?limit=1", headers={"If-None-Match": "*", "X-Request-Id": "inm-1"})
    assert r.status_code == 304, (r.status_code, r.text)
    assert r.content == b"" and "content-type" not in r.headers
    assert r.headers["x-request-id"] == "inm-1"


@pytest.mark.parametrize(
    "headers",
    [{"If-None-Match": "*", "Cache-Control": "no-cache"}, {"If-None-Match": '*, "x"'},
     {"If-None-Match": '"x"'}, {"If-None-Match": "W/*"}],
    ids=["no-cache", "star-and-tag", "tag", "weak-star"],
)
def test_other_if_none_match_is_ignored(api: Api, headers: dict[str, str]) -> None:
    """Only the bare `*` (without Cache-Control: no-cache) makes a 304; anything else is a normal 200."""
    assert_json(api.get("/api/v1/users?limit=1", headers=headers), 200)


def test_if_none_match_star_leaves_errors_alone(api: Api) -> None:
    """An error answer is not turned into a 304, and neither is a write."""
    r = api.get("/api/v1/users/999999999999", headers={"If-None-Match": "*"})
    assert_error(r, 404, "not_found", "user not found")
    headers = {"Content-Type": "application/json", "If-None-Match": "*"}
    r = api.post("/api/v1/users", content=b"{", headers=headers)
    assert_error(r, 400, "invalid_json", "request body is not valid JSON")


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\ufeff", "\x85"])
def test_unicode_space_after_media_type_is_415(api: Api, space: str) -> None:
    """Only spaces and tabs are trimmed around the media type: a Unicode space makes it another type."""
    ctype = ("application/json" + space).encode()
    status, headers, body = exchange(api, request("/api/v1/users", [], b"{}", "POST").replace(
        b"Connection: close\r\n", b"Connection: close\r\nContent-Type: " + ctype + b"\r\n"))
    assert (status, headers["content-type"], body) == (415, JSON_CT, error_body(*UNSUPPORTED))


def test_tab_around_media_type_is_trimmed(api: Api) -> None:
    """A tab before the `;` is OWS and is trimmed."""
    headers = {"Content-Type": "application/json\t; charset=utf-8"}
    r = api.post("/api/v1/users", content=b"{}", headers=headers)
    assert_json(r, 422)


def test_query_pieces_after_the_thousandth_are_ignored(api: Api) -> None:
    """Only the first 1000 `&`-separated pieces are read: a bad limit after them is not seen."""
    junk = "&".join(f"x{i}=1" for i in range(1000))
    assert_json(api.get(f"/api/v1/users?{junk}&limit=abc"), 200)
    assert_json(api.get(f"/api/v1/users?{junk}&&limit=abc"), 200)
    # The 1000th piece is still read.
    short = "&".join(f"x{i}=1" for i in range(999))
    assert_json(api.get(f"/api/v1/users?{short}&limit=abc"), 422,
                validation(("limit", "must be an integer between 1 and 100")))
    # Empty pieces count too.
    assert_json(api.get("/api/v1/users?" + "&" * 999 + "limit=abc"), 422)
    assert_json(api.get("/api/v1/users?" + "&" * 1000 + "limit=abc"), 200)


@pytest.mark.parametrize("path", ["/api/v1/users/1%0A", "/api/v1/users/1%0a", "/api/v1/users/%0A1",
                                  "/api/v1/users/1%0D%0A"])
def test_encoded_newline_in_an_id_is_an_unknown_user(api: Api, path: str) -> None:
    """A decoded newline in {id} makes an invalid id (user not found), not an unroutable path."""
    assert_error(api.get(path), 404, "not_found", "user not found")


def test_encoded_newline_in_a_nested_id(api: Api) -> None:
    """The same for /users/{id}/posts and /posts/{id}."""
    assert_error(api.get("/api/v1/users/1%0A/posts"), 404, "not_found", "user not found")
    assert_error(api.get("/api/v1/posts/1%0A"), 404, "not_found", "post not found")


def _signed(stack: Stack, payload: bytes) -> str:
    head = b64url(b'{"alg":"HS256","typ":"JWT"}')
    body = b64url(payload)
    sig = hmac.new(stack.jwt_secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


@pytest.mark.parametrize(
    "template",
    [
        b'{"sub":"%d","jti":"%s","iat":1,"exp":1e400,"typ":"access"}',
        b'{"sub":"%d","jti":"%s","iat":1,"exp":1E999,"typ":"access"}',
        b'{"sub":"%d","jti":"%s","iat":1,"exp":99999999999,"typ":"access","x":"\\ud800"}',
        b'{"sub":"%d","jti":"%s","iat":1,"exp":99999999999,"typ":"access","x":"\xff"}',
    ],
    ids=["exp-1e400", "exp-1E999", "lone-surrogate", "invalid-utf8"],
)
def test_token_payload_is_parsed_strictly(api: Api, stack: Stack, reader: Account, template: bytes) -> None:
    """A signed token whose payload is not strict JSON (exp Infinity, lone surrogate, bad UTF-8) is 401."""
    jti = access_claims(reader.id)["jti"]
    token = _signed(stack, template % (reader.id, jti.encode()))
    r = api.get("/api/v1/auth/me", token=token)
    assert_error(r, 401, "unauthorized", "missing or invalid access token")
    # Control: the same token with a finite exp is accepted.
    good = _signed(stack, b'{"sub":"%d","jti":"%s","iat":1,"exp":99999999999,"typ":"access"}'
                   % (reader.id, jti.encode()))
    assert_json(api.get("/api/v1/auth/me", token=good), 200)


def test_ids_beyond_2_pow_53_cannot_exist(stack: Stack) -> None:
    """The schema caps ids at 2^53 - 1, so the legacy app can never render one inexactly."""
    inserts = (("users", "id, email, name, password_hash", "$1, 'big@example.com', 'B', 'x'"),
               ("posts", "id, author_id, title, body", "$1, 1, 't', 'b'"))
    for table, columns, values in inserts:
        with pytest.raises(asyncpg.CheckViolationError):
            stack.query(f"INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE VALUES ({values})",
                        2**53 + 1)
    rows = stack.query("SELECT seqmax FROM pg_sequence WHERE seqrelid IN "
                       "(pg_get_serial_sequence('users', 'id')::regclass, "
                       "pg_get_serial_sequence('posts', 'id')::regclass)")
    assert [r["seqmax"] for r in rows] == [2**53 - 1, 2**53 - 1]


def test_a_path_id_beyond_2_pow_53_is_an_unknown_user(api: Api) -> None:
    """9007199254740993 is a well-formed id that cannot exist: 404 user not found on both."""
    assert_error(api.get("/api/v1/users/9007199254740993"), 404, "not_found", "user not found")


@pytest.mark.parametrize("value", ["\u00e9", "a\tb", "\u00ff\u00fe"])
def test_request_id_outside_printable_ascii_counts_as_absent(api: Api, value: str) -> None:
    """An X-Request-Id with bytes outside 0x20-0x7E is not echoed (each server would mangle it its own
    way): a fresh UUID4 comes back instead."""
    raw = request("/health", []).replace(b"Connection: close\r\n",
                                         b"Connection: close\r\nX-Request-Id: " + value.encode() + b"\r\n")
    status, headers, _ = exchange(api, raw)
    assert status == 200 and UUID4.match(headers["x-request-id"]), headers


def test_repeated_request_id_is_joined(api: Api) -> None:
    """Two X-Request-Id headers come back joined with ", " (Node's rule for repeated headers)."""
    raw = request("/health", [("X-Request-Id", "a"), ("X-Request-Id", "b")])
    status, headers, _ = exchange(api, raw)
    assert (status, headers["x-request-id"]) == (200, "a, b")
