"""Generated differential: the same odd requests to both services must get the same answers.

A fixed seed generates COUNT requests (odd JSON, unicode, huge numbers, wrong types, duplicate keys, odd
headers and content types, bad tokens, odd paths and query strings). Each goes to legacy, then to new (one
shared database, so each case sees the same rows on both sides), and status, the compared headers and the
normalised body must be identical. Nothing is asserted about the answer itself: legacy is the reference.
Requests never create a user (a POST to /users always has an invalid field, else the second side would
get 409) and never log in (the shared per-account login counter would make the second side differ).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from contract_kit import UUID4, Account, Api, access_claims, b64url, make_jwt, normalise
from contract_stack import Stack

SEED = 20261206
COUNT = 160
HEADERS = ("content-type", "www-authenticate", "retry-after", "x-request-id", "etag", "x-powered-by", "allow",
           "server", "content-encoding", "connection-close")


@dataclass(frozen=True)
class Case:
    """One generated request; `{me}`, `{other}`, `{post}` and `{token:...}` are filled in per service."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def __str__(self) -> str:
        return f"{self.method} {self.path[:60]} {len(self.headers)}h {len(self.body or b'')}b"


@dataclass
class Side:
    """One service's client and the accounts the placeholders stand for."""

    api: Api
    owner: Account
    other: Account
    other_post: int
    secret: str
    subs: dict[str, str] = field(default_factory=dict)


# --- the generator (pure: the seed alone decides the cases) ---

ODD_STRINGS = ["", " ", "x", "\u00e9", "\U0001f600", "\u0000", "a\u0000b", "\ud800", "\u202e", "\n", "\t",
               "\U0001d54f" * 3, "x" * 201, "y" * 10001, "a@b.co", "A@EXAMPLE.COM", "a@b.co\n", "<script>",
               "' OR 1=1 --", "\\"]
ODD_NUMBERS = ["0", "-0", "1e400", "-1e400", "1e-400", "123456789012345678901234567890", "9007199254740993",
               "1.5", "-1", "1E2", "0.0000001"]
# Placeholders only where they name the same thing on both sides ({post} is a post, {me}/{other} users).
ODD_IDS = ["0", "01", "-1", "1e3", "%31", "1%0A", "%0A", "\uff19", "abc", "9007199254740993",
           "999999999999999999", "1234567890123456789", "%zz", "1.0", "%F0%9F%98%80", ""]
USER_IDS = [*ODD_IDS, "{me}", "{other}", "{me}%20", "{me}/"]
POST_IDS = [*ODD_IDS, "{post}", "{post}%0A"]
PATHS = ["/api/v1/users", "/api/v1/users/{id}", "/api/v1/posts", "/api/v1/posts/{id}",
         "/api/v1/users/{id}/posts", "/api/v1/auth/me", "/API/V1/POSTS/", "/api/v1/posts/{id}/", "/health",
         "/nowhere", "/api/v1/auth/logout", "/api/v1/auth/refresh"]
QUERY_PARTS = ["limit=1", "limit=100", "limit=101", "limit=0", "limit=", "limit", "limit=1&limit=2",
               "offset=5", "offset=-1", "offset=1e3", "offset=999999999", "offset=1000000000",
               "author_id={me}",
               "author_id=0", "author_id=abc", "limit=%31", "limit=+1", "limit=1%00", "limit[]=1", "x=%zz",
               "%ff=1", "limit=\uff11", "a=1;limit=abc", "limit=5#frag"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                 "application/json;",
                 "application/json ; x=y", "application/json\u00a0", "application/jsonx", "text/plain", "",
                 "application/merge-patch+json", "application/json, text/plain",
                 "application/json;charset=latin1"]
AUTHS = ["", "Bearer", "Bearer x.y.z", "Basic dXNlcjpwYXNz", "{token:ok}", "bearer {token:ok}",
         "Bearer  {token:ok}", "Bearer {token:ok} x", "{token:none}", "{token:hs512}", "{token:exp_inf}",
         "{token:exp_past}", "{token:sub_big}", "{token:sub_num}", "{token:jti_upper}", "{token:typ_refresh}",
         "{token:other_secret}", "Bearer {token:ok}."]


def _json_value(rnd: random.Random, depth: int = 0) -> str:
    """Raw JSON text (not always valid) built from odd parts."""
    kind = rnd.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rnd.choice(ODD_NUMBERS)
    if kind == 1:
        return json.dumps(rnd.choice(ODD_STRINGS), ensure_ascii=rnd.random() < 0.5)
    if kind == 2:
        return rnd.choice(["null", "true", "false", '"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', "NaN",
                           "'x'"])
    if kind == 3:
        return json.dumps(rnd.choice(ODD_STRINGS)[:5])
    if kind == 4:
        return str(rnd.randrange(-5, 5))
    if kind in (5, 6):
        return "[" + ",".join(_json_value(rnd, depth + 1) for _ in range(rnd.randrange(3))) + "]"
    return _json_object(rnd, depth + 1)


def _json_object(rnd: random.Random, depth: int = 0, keys: tuple[str, ...] = ()) -> str:
    pool = ["title", "body", "name", "email", "password", "refresh_token", "\u00e9", "Z", "a", "__proto__",
            "constructor", "title"]
    names = list(keys) + rnd.sample(pool, rnd.randrange(4))
    if rnd.random() < 0.2 and names:  # a duplicate key: both parsers keep the last
        names.append(names[0])
    members = [f"{json.dumps(n)}:{_json_value(rnd, depth)}" for n in names]
    return "{" + ",".join(members) + "}"


def _body(rnd: random.Random, path: str, method: str) -> bytes | None:
    if method in ("GET", "HEAD") and rnd.random() < 0.8:
        return None
    roll = rnd.random()
    if roll < 0.1:
        return rnd.choice([b"", b"{", b"\xef\xbb\xbf{}", b"\xff", b'{"a":1}x', b"[" * 1100 + b"]" * 1100,
                           b" " * 102401, b'{"title":"' + b"t" * 102400 + b'"}'])
    if path == "/api/v1/users" and method == "POST":
        # Never a valid user (see the module docstring): an unknown field always rides along.
        text = _json_object(rnd, keys=("email", "password", "name"))[:-1] + ',"zz":1}'
        return text.encode("utf-8", "surrogatepass")
    if path.startswith("/api/v1/posts") and rnd.random() < 0.5:
        return _json_object(rnd, keys=("title", "body")).encode("utf-8", "surrogatepass")
    return _json_value(rnd).encode("utf-8", "surrogatepass")


def _query(rnd: random.Random) -> str:
    roll = rnd.random()
    if roll < 0.4:
        return ""
    if roll < 0.45:
        return "?" + "&".join(f"x{i}=1" for i in range(1000)) + "&limit=abc"
    return "?" + "&".join(rnd.sample(QUERY_PARTS, rnd.randrange(1, 4)))


def generate(seed: int = SEED, count: int = COUNT) -> list[Case]:
    """The cases for `seed`: the same list on every run."""
    rnd = random.Random(seed)
    cases = []
    for _ in range(count):
        template = rnd.choice(PATHS)
        ids = USER_IDS if template.lower().startswith("/api/v1/users") else POST_IDS
        path = template.replace("{id}", rnd.choice(ids))
        method = rnd.choice(["GET", "GET", "POST", "PATCH", "DELETE", "HEAD", "PUT", "OPTIONS"])
        if method in ("PATCH", "DELETE"):
            # Never change or delete one's own user: a new email would conflict on the second side.
            path = path.replace("{me}", "{other}")
        headers: list[tuple[str, str]] = []
        if rnd.random() < 0.7:
            headers.append(("Content-Type", rnd.choice(CONTENT_TYPES)))
        if rnd.random() < 0.1:
            headers.append(("Content-Type", rnd.choice(CONTENT_TYPES)))  # a duplicate
        if rnd.random() < 0.6:
            headers.append(("Authorization", rnd.choice(AUTHS)))
        if rnd.random() < 0.15:
            headers.append(("Content-Encoding", rnd.choice(["gzip", "deflate", "identity", "br", "GZIP"])))
        if rnd.random() < 0.15:
            headers.append(("If-None-Match", rnd.choice(["*", '"x"', "*, *", "W/*", "*,*"])))
        for _ in range(rnd.choice([0, 0, 0, 1, 2])):
            headers.append(("X-Request-Id", rnd.choice(["", "fuzz-id", "x" * 300, "a b", "é", "a\tb", "~"])))
        if rnd.random() < 0.05:
            headers.append(("Cookie", "c=" + "x" * 12 * 1024))
        cases.append(Case(method, path + _query(rnd), tuple(headers), _body(rnd, path, method)))
    return cases


CASES = generate()


# --- running a case on one side ---

def _token(side: Side, kind: str) -> str:
    me = side.owner.id
    claims = {
        "ok": access_claims(me), "exp_inf": access_claims(me), "exp_past": access_claims(me, ttl=-10),
        "sub_big": access_claims(me, sub="9007199254740993"), "sub_num": access_claims(me, sub=me),
        "jti_upper": access_claims(me, jti=secrets.token_hex(16).upper()),
        "typ_refresh": access_claims(me, typ="refresh"),
    }.get(kind, access_claims(me))
    if kind == "none":
        return make_jwt(claims, side.secret, alg="none")
    if kind == "hs512":
        return make_jwt(claims, side.secret, alg="HS512")
    if kind == "other_secret":
        return make_jwt(claims, "another secret of at least thirty-two chars")
    token = make_jwt(claims, side.secret)
    if kind == "exp_inf":  # re-sign a payload whose exp is the literal 1e400
        payload = json.dumps(claims, separators=(",", ":")).replace(str(claims["exp"]), "1e400")
        signing = f"{token.split('.')[0]}.{b64url(payload.encode())}"
        sig = hmac.new(side.secret.encode(), signing.encode(), hashlib.sha256).digest()
        token = f"{signing}.{b64url(sig)}"
    return token


def _fill(side: Side, text: str) -> str:
    text = text.replace("{me}", str(side.owner.id)).replace("{other}", str(side.other.id))
    text = text.replace("{post}", str(side.other_post))
    while "{token:" in text:
        start = text.index("{token:")
        end = text.index("}", start)
        text = text[:start] + _token(side, text[start + 7:end]) + text[end + 1:]
    return text


def send(side: Side, case: Case) -> httpx.Response:
    headers = [("X-Forwarded-For", side.api.ip)]
    headers += [(name, _fill(side, value)) for name, value in case.headers]
    return side.api.http.request(case.method, _fill(side, case.path), content=case.body,
                                 headers=[(n, v.encode("utf-8")) for n, v in headers])


def signature(r: httpx.Response, subs: dict[str, str]) -> tuple[int, dict[str, str | None], bytes]:
    """Status, compared headers (generated values masked) and the normalised body."""
    headers = {h: r.headers.get(h) for h in HEADERS}
    headers["connection-close"] = str(r.headers.get("connection", "").lower() == "close")
    # An echo stays as it is; anything else must be a generated UUID4 (masked: it differs per side).
    if headers["x-request-id"] != r.request.headers.get("x-request-id"):
        headers["x-request-id"] = "<generated>" if UUID4.match(headers["x-request-id"] or "") else "<bad>"
    if headers["retry-after"]:
        headers["retry-after"] = "<seconds>"
    return r.status_code, headers, normalise(r.content, subs)


_SIDES: dict[str, tuple[Account, Account, int]] = {}


@pytest.fixture
def sides(stack: Stack) -> Iterator[list[Side]]:
    """Legacy and new, each with its own owner, other user and other user's post (made once per session)."""
    made = []
    for name in ("legacy", "new"):
        api = stack.api(name)
        if name not in _SIDES:
            owner, other = api.register(name="Fuzz Owner"), api.register(name="Fuzz Other")
            _SIDES[name] = (owner, other, api.create_post(other, title="fuzz", body="theirs")["id"])
        owner, other, post = _SIDES[name]
        made.append(Side(api, owner, other, post, stack.jwt_secret))
    subs = {}
    for side in made:
        subs.update({side.owner.email: "<owner>", side.other.email: "<other>"})
    for side in made:
        side.subs = subs
    yield made
    for side in made:
        side.api.close()


def test_the_generator_is_deterministic() -> None:
    """The same seed gives the same cases (a failure can be replayed by its index)."""
    assert generate() == CASES and generate(SEED + 1) != CASES
    assert len(CASES) == COUNT


@pytest.mark.parametrize("index", range(COUNT))
def test_generated_request_gets_identical_answers(sides: list[Side], index: int) -> None:
    """Generated case `index`: legacy and new answer with the same status, headers and normalised body."""
    case = CASES[index]
    legacy, new = (signature(send(side, case), side.subs) for side in sides)
    assert new == legacy, str(case)
