"""End to end: no spelling of a request target lets a client pick a backend behind the routing table's back.

The real gateway routes ``GET /api/v1/users/{id}`` to the real new service (test mode: a user it renders
has a "!" appended to its name) and everything else to the real legacy Express app. Each target of the
catalogue goes out as raw bytes (no client normalisation) and must either be refused by the gateway (400
JSON ``bad_request`` with X-Request-Id) or be answered exactly (status + body) as the backend that the
table names answers the gateway's ``forward_path`` sent directly, and by that backend (the "!"). Each
target is also sent straight to Express: the gateway accepts a target only if Express reads it as the
path the gateway forwards, so the gateway never routes a spelling that legacy would route elsewhere.
The table printed at the end (run with ``-s``) records what each side did.

An escaped letter in a literal segment (``/api/v1/%75sers/1``) is not the route for either side: the
gateway, like Express, compares literal segments undecoded, so it goes to the default (legacy) as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from e2e_rig import Reply, System, raw_get

from proxy.routing.paths import BadPath, canonicalise

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Case:
    """A target template (``{id}``: the user's id, ``{eid}``: the id percent-encoded) and its fate."""

    target: str
    expect: str  # "new", "legacy" or "refused"
    why: str


CATALOGUE = [
    Case("/api/v1/users/{id}", "new", "the route itself"),
    Case("/API/v1/users/{id}/", "new", "case + trailing slash, as Express matches"),
    Case("/api/V1/Users/{id}", "new", "literal segments are case-insensitive"),
    Case("/api/v1/users/{id}/", "new", "one trailing slash is ignored"),
    Case("/api/v1/users/{eid}", "new", "encoded digits in a parameter: decoded (Express decodes too)"),
    Case("/api/v1/users/{id}?x=1", "new", "the query is passed through"),
    Case("/api/v1/users/{id}/?x=1", "new", "trailing slash before a query"),
    Case("/api/v1/users/{id}?", "new", "empty query"),
    Case("/api/v1/users/{id}?next=%2F..%2F", "new", "path rules do not apply to the query"),
    Case("/api/v1/users/{id};x", "new", "';' is literal: the id is '{id};x'"),
    Case("/api/v1/users/{id}%3B", "new", "reserved escapes are kept: the id is '{id}%3B'"),
    Case("/api/v1/users/{id}%20", "new", "an encoded space stays in the id"),
    Case("/api/v1/users/%C3%A9", "new", "a non-ASCII id, percent-encoded"),
    Case("/api/v1/%75sers/{id}", "legacy", "an encoded letter is not the literal 'users' (as in Express)"),
    Case("/%61pi/v1/users/{id}", "legacy", "an encoded letter in the first literal segment"),
    Case("/api/v1/users;x/{id}", "legacy", "';' is literal: 'users;x' is not 'users'"),
    Case("/api/v1/users/{id}/posts", "legacy", "a longer path is not the users route"),
    Case("/api/v1/users/{eid}/posts", "legacy", "encoded digits in a parameter of the default route"),
    Case("/API/V1/USERS/{id}/POSTS/", "legacy", "the default route forwards case and slash as sent"),
    Case("/api/v1/%75sers/{id}/posts", "legacy", "an encoded letter on the default route"),
    Case("/api/v1/users", "legacy", "the list is legacy's"),
    Case("/api/v1/users/", "legacy", "the list with a trailing slash"),
    Case("/Api/V1/Users?limit=5", "legacy", "the list, mixed case, with a query"),
    Case("/api/v1/users/{id}%2F..", "refused", "encoded slash"),
    Case("/api/v1/users/{id}%2f", "refused", "encoded slash, lower-case hex"),
    Case("/api/v1/users%2F{id}", "refused", "encoded slash between literal and id"),
    Case("/api/v1/users/./{id}", "refused", "dot segment"),
    Case("/api/v1/users/../users/{id}", "refused", "dot-dot segment"),
    Case("/api/v1/users/%2e%2e/users/{id}", "refused", "encoded dot-dot segment"),
    Case("/api/v1/users/%2E/{id}", "refused", "encoded dot segment"),
    Case("/api/v1/users/{id}/.", "refused", "trailing dot segment"),
    Case("/api/v1/users/{id}/..", "refused", "trailing dot-dot segment"),
    Case("/api/v1/posts/../users/{id}", "refused", "dot-dot from another resource"),
    Case("/api/v1//users/{id}", "refused", "empty segment"),
    Case("//api/v1/users/{id}", "refused", "leading empty segment"),
    Case("/api/v1/users/{id}//", "refused", "two trailing slashes"),
    Case("/api/v1/users/{id}#frag", "refused", "raw fragment"),
    Case("/api/v1/users/{id}?x=#", "refused", "raw '#' in the query"),
    Case("/api/v1/users/{id}%00", "refused", "encoded NUL"),
    Case("/api/v1/users/{id}%09", "refused", "encoded control character"),
    Case("/api/v1/users/{id}%7F", "refused", "encoded DEL"),
    Case("/api/v1/users/{id}\x7f", "refused", "raw DEL"),
    Case("/api/v1/users/{id}%5C", "refused", "encoded backslash"),
    Case("/api/v1/users\\{id}", "refused", "raw backslash"),
    Case("/api/v1/users/{id}%", "refused", "truncated escape"),
    Case("/api/v1/users/{id}%zz", "refused", "invalid escape"),
    Case("/api/v1/users/\xe9", "refused", "raw non-ASCII byte"),
    Case("http://evil/api/v1/users/{id}", "refused", "absolute form"),
    Case("api/v1/users/{id}", "refused", "no leading slash"),
]
PARAMS = [pytest.param(c, id=c.target) for c in CATALOGUE]


def expand(case: Case, user_id: int) -> bytes:
    """The raw target bytes for this case and user."""
    eid = "".join(f"%{ord(c):02X}" for c in str(user_id))
    return case.target.format(id=user_id, eid=eid).encode("latin-1")


def _by_names(doc: Any) -> str | None:
    """Whose users a body shows: "new" if their names end in the test-mode "!", "legacy" if not, else None."""
    users: list[Any] = []
    if isinstance(doc, dict):
        users = [doc] if "name" in doc else doc.get("items", [])
    names = [u["name"] for u in users if isinstance(u, dict) and isinstance(u.get("name"), str)]
    if not names:
        return None
    marked = {name.endswith("!") for name in names}
    assert len(marked) == 1, f"a reply mixing both backends' users: {names}"
    return "new" if marked.pop() else "legacy"


def backend_of(reply: Reply) -> str:
    """Which service rendered a reply the gateway passed on.

    The user names tell when the body has any (the "!"); otherwise the Server header, which aiohttp
    (new, in its test mode) sends and the legacy app does not. Both must agree when both tell.
    """
    by_server = "new" if "aiohttp" in reply.headers.get("server", "") else "legacy"
    try:
        by_names = _by_names(orjson.loads(reply.body))
    except orjson.JSONDecodeError:
        by_names = None
    assert by_names in (None, by_server), f"names say {by_names}, the Server header says {by_server}"
    return by_server


def describe(reply: Reply) -> str:
    """A short account of an Express reply for the table: status and error code or whose users."""
    try:
        doc = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return f"{reply.status} (not JSON)"
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return f"{reply.status} {doc['error'].get('code')}"
    return f"{reply.status} {'user(s)' if _by_names(doc) else 'page'}"


def gateway_refusal(reply: Reply) -> dict[str, Any] | None:
    """The error object if the gateway itself refused (400 bad_request with its request id), else None."""
    if reply.status != 400:
        return None
    error: dict[str, Any] = orjson.loads(reply.body)["error"]
    if "request_id" not in error:
        return None  # a backend's 400, passed on (the backends do not put a request id in the body)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert error["code"] == "bad_request", error
    assert error["request_id"] == reply.headers["x-request-id"] != "", (error, reply.headers)
    return error


def canonical(target: bytes) -> tuple[str, str] | None:
    """``paths.canonicalise`` (path, query), or None where it refuses the target."""
    try:
        return canonicalise(target)
    except BadPath:
        return None


ROWS: list[tuple[str, str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Iterator[None]:
    """Print (target, gateway, backend reached, Express direct) for the record once the module is done."""
    yield
    width = max((len(repr(row[0])) for row in ROWS), default=6)
    print(f"\n{'target':<{width}}  {'gateway':<14}  {'backend':<8}  express direct")
    for target, gateway, backend, express in ROWS:
        print(f"{target!r:<{width}}  {gateway:<14}  {backend:<8}  {express}")


@pytest.mark.parametrize("case", PARAMS)
async def test_target_is_refused_or_reaches_the_named_backend(system: System, case: Case) -> None:
    """A tricky target is refused (400 JSON) or answered by the table's backend exactly as it answers
    the forwarded path, and only if Express reads the raw target as that forwarded path."""
    target = expand(case, system.user.id)
    shown = target.decode("latin-1")
    gateway = await raw_get(system.gateway_port, target)
    express = await raw_get(system.ports["legacy"], target)
    refusal = gateway_refusal(gateway)
    if refusal is not None:
        ROWS.append((shown, "400 refused", "-", describe(express)))
        assert canonical(target) is None, f"the gateway refused {shown!r}, which paths.canonicalise accepts"
        assert case.expect == "refused", f"{shown!r} ({case.why}) was refused: {refusal}"
        return
    parts = canonical(target)
    assert parts is not None, f"{shown!r} reached a backend though paths.canonicalise refuses it"
    path, query = parts
    match = system.table.match("GET", path)
    upstream = match.route.target
    forwarded = (match.forward_path + ("?" + query if query else "")).encode()
    direct = await raw_get(system.ports[upstream], forwarded)
    express_forwarded = await raw_get(system.ports["legacy"], forwarded)
    reached = backend_of(gateway)
    ROWS.append((shown, f"{gateway.status} {upstream}", reached, describe(express)))
    assert reached == upstream, f"{shown!r} is routed to {upstream} but {reached} answered"
    assert (gateway.status, gateway.body) == (direct.status, direct.body), (shown, forwarded)
    # Express must read the raw target as the forwarded path; where it reads it otherwise, the
    # gateway would be routing a spelling that legacy routes elsewhere, and must refuse it instead.
    assert (express.status, express.body) == (express_forwarded.status, express_forwarded.body), (
        f"Express reads {shown!r} as {describe(express)} but the forwarded {forwarded!r} as "
        f"{describe(express_forwarded)}: the gateway must refuse {shown!r}"
    )
    assert upstream == case.expect, f"{shown!r} ({case.why}) routed to {upstream}, expected {case.expect}"
