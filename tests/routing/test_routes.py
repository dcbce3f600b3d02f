"""proxy.routing.table: loading, validation with exact lines, specificity, ties, matching, shipped file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.routing.jsonpath import WILDCARD, JsonPathError, parse_path
from proxy.routing.table import (
    CompareRules,
    RoutesError,
    RouteTable,
    ShadowSettings,
    ShadowSpec,
    load_routes,
    parse_routes,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "proxy" / "routing" / "routes.schema.json").read_text())
UPSTREAMS = """\
upstreams:
  legacy: {url: "http://127.0.0.1:3000"}
  new: {url: "http://127.0.0.1:8000"}
"""


def table(routes: str, head: str = UPSTREAMS) -> RouteTable:
    """Parse the standard upstreams plus a dedented ``routes:`` block."""
    return parse_routes(head + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  "), "t.yaml")


def errors_of(text: str) -> list[tuple[int, str, str]]:
    """(line, key, message) of every error parse_routes reports for ``text``."""
    with pytest.raises(RoutesError) as caught:
        parse_routes(text, "bad.yaml")
    assert all(e.file == "bad.yaml" for e in caught.value.errors)
    return [(e.line, e.key, e.message) for e in caught.value.errors]


def route_of(t: RouteTable, method: str, path: str) -> str:
    """The name of the route ``method path`` matches."""
    return t.match(method, path).route.name


# --- the shipped file -------------------------------------------------------------------------------


def test_shipped_routes_yaml_loads() -> None:
    """The repository's routes.yaml loads and sends health and users reads to new, the rest to legacy."""
    t = load_routes(ROOT / "routes.yaml")
    assert t.sha256 == hashlib.sha256((ROOT / "routes.yaml").read_bytes()).hexdigest()
    assert t.default.target == "legacy"
    assert set(t.upstreams) == {"legacy", "new"}
    assert t.match("GET", "/health").route.target == "new"
    assert t.match("GET", "/API/v1/users/7/").route.target == "new"
    assert t.match("GET", "/api/v1/users/7/posts").route.target == "new"
    assert t.match("PATCH", "/api/v1/users/7").route.target == "legacy"
    assert t.match("POST", "/api/v1/auth/login").route.name == "default"
    assert t.match("GET", "/api/v1/posts").route.target == "legacy"


def test_shipped_routes_yaml_matches_schema() -> None:
    """The shipped routes.yaml validates against the shipped JSON Schema, which is itself valid."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    document = yaml.safe_load((ROOT / "routes.yaml").read_text())
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
    assert errors == []


# --- values and defaults ----------------------------------------------------------------------------


def test_defaults_and_values() -> None:
    """Omitted keys take their documented defaults; given ones are parsed into the dataclasses."""
    t = parse_routes(
        textwrap.dedent(
            """\
            upstreams:
              legacy: {url: "http://legacy.internal"}
              new: {url: "http://10.0.0.2:8000/svc/", connect_timeout: 0.5, timeout: 10, pool_size: 8}
            default: new
            shadow: {queue: 5, timeout: 3, redact: [pw]}
            routes:
              - name: a
                match: {methods: [GET, POST], path: "/a/{id}"}
                target: legacy
                shadow: {sample: 0.25, writes: true}
                compare: {ignore: ["$.x"], sets: ["$.tags"], tolerance: 0.01, headers: [Content-Type]}
              - name: b
                match: {path: /b}
                target: new
                shadow: {timeout: 1}
            """
        ),
        "v.yaml",
    )
    legacy, new = t.upstreams["legacy"], t.upstreams["new"]
    assert (legacy.scheme, legacy.host, legacy.port, legacy.base_path) == ("http", "legacy.internal", 80, "")
    assert (legacy.connect_timeout, legacy.total_timeout, legacy.pool_size) == (1.0, 30.0, 64)
    assert (new.host, new.port, new.base_path, new.connect_timeout, new.total_timeout, new.pool_size) == (
        "10.0.0.2",
        8000,
        "/svc",
        0.5,
        10.0,
        8,
    )
    assert t.default.target == "new" and t.default.line == 4
    assert t.shadow_settings == ShadowSettings(queue=5, timeout=3.0, redact=("pw",))
    a, b = sorted(t.routes, key=lambda r: r.name)
    assert a.methods == frozenset({"GET", "HEAD", "POST"})
    assert a.shadow == ShadowSpec(sample=0.25, writes=True, timeout=3.0)
    assert a.compare == CompareRules(("$.x",), ("$.tags",), 0.01, False, ("content-type",))
    assert a.line == 7
    assert b.methods is None and b.compare == CompareRules()
    assert b.shadow == ShadowSpec(sample=1.0, writes=False, timeout=1.0)
    assert t.source == "v.yaml" and abs(t.loaded_at - time.time()) < 60


def test_minimal_file_has_only_the_default_route() -> None:
    """A file with upstreams only routes everything to legacy through the default route."""
    t = parse_routes(UPSTREAMS, "m.yaml")
    assert t.routes == ()
    found = t.match("DELETE", "/anything/At/all/")
    assert found.route is t.default and found.forward_path == "/anything/At/all/"
    assert t.default.name == "default" and t.default.target == "legacy" and t.default.methods is None


# --- matching ---------------------------------------------------------------------------------------

USERS = """\
- {name: users-get, match: {methods: [GET], path: "/api/v1/users/{id}"}, target: new}
- {name: users-me, match: {methods: [GET], path: /api/v1/users/me}, target: new}
- {name: users-posts, match: {methods: [GET], path: "/api/v1/users/{id}/posts"}, target: new}
- {name: users-write, match: {methods: [PATCH, DELETE], path: "/api/v1/users/{id}"}, target: legacy}
- {name: users-list, match: {path: /api/v1/users}, target: new}
- {name: api-rest, match: {path: "/api/{rest*}"}, target: new}
- {name: v1-any, match: {methods: [POST], path: "/api/v1/{what}/{id}"}, target: new}
- {name: root, match: {methods: [GET], path: /}, target: new}
"""


@pytest.mark.parametrize(
    ("method", "path", "name", "params", "forward"),
    [
        ("GET", "/api/v1/users/1", "users-get", {"id": "1"}, "/api/v1/users/1"),
        ("GET", "/API/V1/USERS/1/", "users-get", {"id": "1"}, "/api/v1/users/1"),  # Express semantics
        ("HEAD", "/api/v1/users/1", "users-get", {"id": "1"}, "/api/v1/users/1"),  # GET implies HEAD
        ("GET", "/api/v1/users/AbC", "users-get", {"id": "AbC"}, "/api/v1/users/AbC"),  # params as given
        ("GET", "/api/v1/users/me", "users-me", {}, "/api/v1/users/me"),  # literal beats param
        ("GET", "/api/v1/users/ME/", "users-me", {}, "/api/v1/users/me"),
        ("PATCH", "/api/v1/users/1", "users-write", {"id": "1"}, "/api/v1/users/1"),
        (
            "PATCH",
            "/api/v1/users/me",
            "users-write",
            {"id": "me"},
            "/api/v1/users/me",
        ),  # methods fall through
        ("POST", "/api/v1/users/1", "v1-any", {"what": "users", "id": "1"}, "/api/v1/users/1"),
        ("PUT", "/api/v1/users/1", "api-rest", {"rest": "v1/users/1"}, "/api/v1/users/1"),
        ("GET", "/api/v1/users/1/posts/", "users-posts", {"id": "1"}, "/api/v1/users/1/posts"),
        ("GET", "/api/v1/users", "users-list", {}, "/api/v1/users"),
        ("OPTIONS", "/Api/V1/Users/", "users-list", {}, "/api/v1/users"),  # no methods: any method
        ("GET", "/api", "api-rest", {"rest": ""}, "/api"),  # a wildcard matches zero segments
        ("GET", "/api/", "api-rest", {"rest": ""}, "/api"),
        ("GET", "/API/x/Y/z/", "api-rest", {"rest": "x/Y/z"}, "/api/x/Y/z"),
        ("GET", "/", "root", {}, "/"),
        ("POST", "/", "default", {}, "/"),
        ("GET", "/apix", "default", {}, "/apix"),
        ("GET", "/Other/Path/", "default", {}, "/Other/Path/"),  # the default forwards the path unchanged
        (
            "GET",
            "/api/v1/users/1/posts/2",
            "api-rest",
            {"rest": "v1/users/1/posts/2"},
            "/api/v1/users/1/posts/2",
        ),
        ("GET", "/api/v1/users/a;b", "users-get", {"id": "a;b"}, "/api/v1/users/a;b"),
        ("GET", "/api/v1/users/caf%C3%A9", "users-get", {"id": "caf%C3%A9"}, "/api/v1/users/caf%C3%A9"),
    ],
)
def test_match(method: str, path: str, name: str, params: dict[str, str], forward: str) -> None:
    """Match picks the most specific route, extracts params and builds the forward path."""
    found = table(USERS).match(method, path)
    assert (found.route.name, dict(found.params), found.forward_path) == (name, params, forward)


def test_priority_order() -> None:
    """routes lists routes in match-priority order: literal > param > end > wildcard, then longer first."""
    t = table(USERS)
    assert [r.name for r in t.routes] == [
        "users-me",
        "users-posts",  # /api/v1/users/{id}/posts: literal after the param beats the end of users-get
        "users-get",
        "users-write",  # same key as users-get: file order (methods are disjoint)
        "users-list",
        "v1-any",
        "api-rest",
        "root",  # nothing but the end: after every template that has a first literal or param
    ]


def test_priority_order_exact() -> None:
    """The priority order is exactly the documented specificity order, file order breaking equal keys."""
    t = table(
        """\
        - {name: w, match: {path: "/a/{rest*}"}, target: new}
        - {name: p, match: {path: "/a/{x}"}, target: new}
        - {name: l, match: {path: /a/b}, target: new}
        - {name: e, match: {path: /a}, target: new}
        - {name: pl, match: {path: "/a/{x}/c"}, target: new}
        - {name: top, match: {path: "/{x}/b"}, target: new}
        - {name: all, match: {path: "/*"}, target: new}
        """
    )
    assert [r.name for r in t.routes] == ["l", "pl", "p", "e", "w", "top", "all"]
    assert route_of(t, "GET", "/a") == "e"  # an exact /a beats /a/{rest*}
    assert route_of(t, "GET", "/a/b") == "l"
    assert route_of(t, "GET", "/a/z") == "p"
    assert route_of(t, "GET", "/a/z/c") == "pl"
    assert route_of(t, "GET", "/a/z/d") == "w"
    assert route_of(t, "GET", "/q/b") == "top"
    assert route_of(t, "GET", "/") == "all"
    assert t.match("GET", "/q/r/s").params == {"*": "q/r/s"}


def test_param_matches_exactly_one_segment() -> None:
    """{id} needs exactly one segment: neither the bare collection nor a deeper path matches it."""
    t = table("""- {name: g, match: {path: "/u/{id}"}, target: new}\n""")
    assert route_of(t, "GET", "/u/1") == "g"
    assert route_of(t, "GET", "/u") == "default"
    assert route_of(t, "GET", "/u/") == "default"
    assert route_of(t, "GET", "/u/1/2") == "default"


def test_many_routes_index() -> None:
    """With many first segments, each request still finds its route (index buckets are right)."""
    body = "".join(
        f'- {{name: r{i}, match: {{methods: [GET], path: "/s{i}/{{id}}/x{i}"}}, target: new}}\n'
        for i in range(40)
    )
    t = table(body + '- {name: any, match: {path: "/{a}/{b}/{c}"}, target: new}\n')
    for i in range(40):
        assert route_of(t, "GET", f"/S{i}/7/X{i}/") == f"r{i}"
        assert route_of(t, "GET", f"/s{i}/7/y") == "any"
        assert route_of(t, "POST", f"/s{i}/7/x{i}") == "any"
    assert route_of(t, "GET", "/zzz/1/2") == "any"
    assert route_of(t, "GET", "/zzz/1/2/3") == "default"


# --- ties and unreachable routes ------------------------------------------------------------------


def test_tie_is_an_error_naming_both_routes() -> None:
    """Two routes matching the same requests with equal specificity are a load error naming both."""
    errors = errors_of(
        UPSTREAMS
        + textwrap.dedent(
            """\
            routes:
              - {name: one, match: {methods: [GET], path: "/u/{id}"}, target: new}
              - {name: two, match: {methods: [GET, PUT], path: "/U/{uid}"}, target: legacy}
              - {name: three, match: {methods: [POST], path: "/u/{x}"}, target: new}
              - {name: four, match: {path: "/u/{y}"}, target: new}
            """
        )
    )
    assert [(line, key) for line, key, _ in errors] == [
        (6, "routes[1].match"),
        (8, "routes[3].match"),
        (8, "routes[3].match"),
        (8, "routes[3].match"),
    ]
    assert "ties with routes[0] 'one' (line 5: GET,HEAD /u/{id})" in errors[0][2]
    assert "equal specificity" in errors[0][2]


def test_disjoint_methods_on_one_path_are_fine() -> None:
    """The same path with disjoint methods is not a tie; HEAD counts as GET's."""
    t = table(
        """\
        - {name: g, match: {methods: [GET], path: "/u/{id}"}, target: new}
        - {name: p, match: {methods: [PATCH], path: "/u/{id}"}, target: legacy}
        """
    )
    assert route_of(t, "HEAD", "/u/1") == "g" and route_of(t, "PATCH", "/u/1") == "p"
    errors = errors_of(
        UPSTREAMS + "routes:\n"
        '  - {name: g, match: {methods: [GET], path: "/u/{id}"}, target: new}\n'
        '  - {name: h, match: {methods: [HEAD], path: "/u/{id}"}, target: legacy}\n'
    )
    assert [(line, key) for line, key, _ in errors] == [(6, "routes[1].match")]


def test_exact_duplicate_is_an_error() -> None:
    """An exact duplicate of path and methods is reported (as a tie) on the later route."""
    errors = errors_of(
        UPSTREAMS + "routes:\n"
        "  - {name: a, match: {methods: [GET], path: /x}, target: new}\n"
        "  - {name: b, match: {methods: [GET], path: /X}, target: new}\n"
    )
    assert errors == [
        (
            6,
            "routes[1].match",
            "duplicates routes[0] 'a' (line 5: GET,HEAD /x): same path and methods; remove one of them",
        )
    ]


def test_unreachable_route_is_an_error() -> None:
    """A route whose every request goes to more specific routes is unreachable, naming the winners."""
    errors = errors_of(
        UPSTREAMS
        + textwrap.dedent(
            """\
            routes:
              - name: catch
                match: {methods: [GET], path: "/a/{rest*}"}
                target: new
              - {name: exact, match: {path: /a}, target: legacy}
              - {name: one-or-more, match: {path: "/a/{x}/{rest*}"}, target: legacy}
            """
        )
    )
    assert errors == [
        (
            5,
            "routes[0]",
            "route 'catch' is unreachable: every request it matches goes to a more specific route "
            "('exact' (line 8), 'one-or-more' (line 9)); remove it or narrow the others",
        )
    ]


def test_partially_shadowed_route_is_fine() -> None:
    """A wildcard that still wins some requests (another method, a deeper path) loads."""
    t = table(
        """\
        - {name: catch, match: {path: "/a/{rest*}"}, target: new}
        - {name: exact, match: {methods: [GET], path: /a}, target: legacy}
        - {name: one, match: {path: "/a/{x}"}, target: legacy}
        """
    )
    assert route_of(t, "POST", "/a") == "catch"
    assert route_of(t, "GET", "/a/b/c") == "catch"


# --- validation errors, with exact lines ----------------------------------------------------------

BAD = """\
upstreams:
  legacy: {url: "ftp://127.0.0.1:3000", pool_size: 0}
  new:
    url: "http://127.0.0.1:99999"
    timeout: -1
    colour: blue
  third: {url: "http://x"}
default: nwe
shadow: {queue: 0, aa_sample: 1.5, redact: password}
routes:
  - name: users-get
    match: {methods: [get], path: "/api/v1/users/{id}"}
    target: nwe
  - name: users-get
    match: {path: "/api/v1/users/"}
    target: new
    shadow: {sample: 2, writes: true}
  - name: Bad Name
    match: {methods: [], path: "api/{x}/{x}"}
    target: legacy
    compare: {ignore: ["items[*]", "$.ok"], tolerance: -1, headers: ["bad header"], extra: 1}
  - match: {path: /x}
  - {name: w, match: {path: "/a/{rest*}/b"}, target: legacy, shadow: {writes: yes, timeout: 0}}
  - {name: s, match: {path: "/a/:id"}, target: legacy}
  - "just a string"
"""


def test_every_error_is_reported_with_line_and_key() -> None:
    """One load reports every problem, each at the line of the offending key or value, in line order."""
    got = [(line, key) for line, key, _ in errors_of(BAD)]
    assert got == [
        (2, "upstreams.legacy.url"),
        (2, "upstreams.legacy.pool_size"),
        (4, "upstreams.new.url"),
        (5, "upstreams.new.timeout"),
        (6, "upstreams.new.colour"),
        (7, "upstreams.third"),
        (8, "default"),
        (9, "shadow.queue"),
        (9, "shadow.aa_sample"),
        (9, "shadow.redact"),
        (12, "routes[0].match.methods[0]"),
        (13, "routes[0].target"),
        (14, "routes[1].name"),
        (15, "routes[1].match.path"),
        (17, "routes[1].shadow.sample"),
        (17, "routes[1].shadow.writes"),
        (18, "routes[2].name"),
        (19, "routes[2].match.methods"),
        (19, "routes[2].match.path"),
        (21, "routes[2].compare.extra"),
        (21, "routes[2].compare.ignore[0]"),
        (21, "routes[2].compare.tolerance"),
        (21, "routes[2].compare.headers[0]"),
        (22, "routes[3]"),
        (22, "routes[3]"),
        (23, "routes[4].match.path"),
        (23, "routes[4].shadow.timeout"),
        (24, "routes[5].match.path"),
        (25, "routes[6]"),
    ]


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("upstreams.legacy.url", "must be an http:// URL (or https://)"),
        ("upstreams.legacy.pool_size", "must be an integer from 1 to 10000; got 0"),
        ("upstreams.new.url", "invalid port"),
        ("upstreams.new.timeout", "must be a number > 0"),
        (
            "upstreams.new.colour",
            "unknown key 'colour' (allowed: url, connect_timeout, timeout, pool_size, host, ca_file)",
        ),
        ("upstreams.third", "unknown key 'third' (allowed: legacy, new)"),
        ("default", "unknown upstream 'nwe' (known: legacy, new)"),
        ("routes[0].target", "unknown upstream 'nwe' (known: legacy, new; or auto"),
        ("shadow.aa_sample", "must be a number >= 0 and <= 1; got 1.5"),
        ("shadow.redact", "must be a list of strings; got a string"),
        ("routes[0].match.methods[0]", "must be an upper-case token such as GET or POST; write 'GET'"),
        ("routes[1].name", "duplicate route name 'users-get' (first on line 11)"),
        ("routes[1].match.path", "ends with '/'"),
        ("routes[1].shadow.writes", "legacy, which has no dry run"),
        ("routes[2].match.methods", "must not be an empty list"),
        ("routes[2].match.path", "must start with '/'"),
        ("routes[2].compare.ignore[0]", "must start with '$'"),
        ("routes[2].compare.headers[0]", "not a valid header name"),
        ("routes[3]", "missing required key 'name'"),
        ("routes[3]", "missing required key 'target'"),
        ("routes[4].match.path", "must be the last segment"),
        ("routes[4].shadow.timeout", "must be a number > 0"),
        ("routes[5].match.path", "write parameters as {id}"),
        ("routes[6]", "must be a mapping"),
    ],
)
def test_error_messages(key: str, fragment: str) -> None:
    """Each error message says what is wrong (and what to do) for its key."""
    messages = [message for _, k, message in errors_of(BAD) if k == key]
    assert any(fragment in message for message in messages), messages


def test_error_string_format() -> None:
    """RoutesError lists every error as FILE:LINE: KEY: MESSAGE, one per line."""
    with pytest.raises(RoutesError) as caught:
        parse_routes(UPSTREAMS + "routes:\n  - {name: a, match: {path: /a}, target: nwe}\n", "routes.yaml")
    assert str(caught.value) == (
        "routes.yaml:5: routes[0].target: unknown upstream 'nwe' "
        "(known: legacy, new; or auto, for the autopilot's rollout plan)"
    )


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            UPSTREAMS + "routes:\n  - {name: a, match: {path: /u/{id}}, target: new}\n",
            5,
            "quote a path template",
        ),
        (UPSTREAMS + "routes: [\n", 5, "not valid YAML"),
        ("upstreams:\n  legacy: {url: x\n  new: 1\n", 3, "not valid YAML"),
        ("", 1, "the file is empty"),
        ("a: 1\n---\nb: 2\n", 2, "not valid YAML"),
    ],
)
def test_yaml_syntax_error_reports_its_line(text: str, line: int, fragment: str) -> None:
    """A YAML syntax error is one error at its line, with a hint for the unquoted-braces mistake."""
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0][0] == line and errors[0][1] == "yaml" and fragment in errors[0][2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- 1\n", [(1, "", "must be a mapping")]),
        ("routes: []\n", [(1, "", "missing required key 'upstreams'")]),
        (UPSTREAMS + "upstreams: {}\n", [(4, "upstreams", "duplicate key (first given on line 1)")]),
        (UPSTREAMS + "routes: {a: 1}\n", [(4, "routes", "must be a list")]),
        (UPSTREAMS + "shadow: {timeout: .inf}\n", [(4, "shadow.timeout", "must be a number > 0")]),
        (UPSTREAMS + "shadow: {queue: true}\n", [(4, "shadow.queue", "got true or false")]),
        (UPSTREAMS + "shadow: {queue: 1.5}\n", [(4, "shadow.queue", "must be an integer")]),
        (UPSTREAMS + "1: x\n", [(4, "", "keys must be plain names")]),
        (
            UPSTREAMS + "routes:\n  - name: a\n    match: {path: /a}\n    target: new\n    compare:\n"
            "      headers:\n        - ETag\n        - etag\n",
            [(10, "routes[0].compare.headers", "lists a header twice")],
        ),
        (
            UPSTREAMS + "routes: [{name: no, match: {path: /a}, target: new}]\n",
            [(4, "routes[0].name", 'must be a string; got true or false (write "no" in quotes')],
        ),
        (
            UPSTREAMS
            + "routes:\n  - {name: a, match: {path: /a}, target: new, compare: {ignore: ['$.a[x]']}}\n",
            [(5, "routes[0].compare.ignore[0]", "allowed segments are .name, [n] and [*]")],
        ),
        (
            UPSTREAMS + "routes:\n  - name: a\n    match: {path: /a}\n    target: new\n    compare:\n"
            "      generated: ['$.id', 'token']\n",
            [(9, "routes[0].compare.generated[1]", "must start with '$'")],
        ),
        (
            UPSTREAMS
            + "routes:\n  - {name: a, match: {path: /a}, target: new, compare: {generated: '$.id'}}\n",
            [(5, "routes[0].compare.generated", "must be a list of strings")],
        ),
        (
            UPSTREAMS + "routes:\n  - {name: default, match: {path: /a}, target: new}\n",
            [(5, "routes[0].name", "reserved")],
        ),
        (
            UPSTREAMS + "routes:\n  - {name: a, match: {path: '/a/{x}/{x}'}, target: new}\n",
            [(5, "routes[0].match.path", "uses the parameter name 'x' twice")],
        ),
        (
            UPSTREAMS + "routes:\n  - {name: a, match: {path: /a/../b}, target: new}\n",
            [(5, "routes[0].match.path", "segment '..'")],
        ),
        (
            UPSTREAMS + "routes:\n  - {name: a, match: {path: '/a/{x}.json'}, target: new}\n",
            [(5, "routes[0].match.path", "whole-segment")],
        ),
        (
            UPSTREAMS + "routes:\n  - {name: a, match: {path: /a, methods: [GET, GET]}, target: new}\n",
            [(5, "routes[0].match.methods[1]", "duplicate entry 'GET'")],
        ),
        (
            "upstreams:\n  legacy: {url: 'http://u:p@h'}\n  new: {url: 'ftp://h'}\n",
            [(2, "upstreams.legacy.url", "credentials"), (3, "upstreams.new.url", "must be an http:// URL")],
        ),
        (
            "upstreams:\n  legacy: {url: 'http://h/a?b'}\n  new: {url: 'http:///x'}\n",
            [(2, "upstreams.legacy.url", "query"), (3, "upstreams.new.url", "has no host")],
        ),
        (
            "upstreams:\n  legacy: {url: 'http://h:0'}\n  new: {url: 'http://a b'}\n",
            [(2, "upstreams.legacy.url", "invalid port"), (3, "upstreams.new.url", "invalid host 'a b'")],
        ),
        (
            "upstreams:\n  legacy: {url: 'http://h/café'}\n  new: {url: 'http://h/%zz'}\n",
            [
                (2, "upstreams.legacy.url", "must be ASCII"),
                (3, "upstreams.new.url", "invalid percent-escape"),
            ],
        ),
        (
            "upstreams:\n  legacy: {url: 'http://h/a/../b'}\n  new: {url: 'http://h'}\n",
            [(2, "upstreams.legacy.url", "dot segment")],
        ),
        ("upstreams:\n  legacy: {url: 'http://h'}\n", [(2, "upstreams", "missing required key 'new'")]),
    ],
)
def test_single_errors(text: str, expected: list[tuple[int, str, str]]) -> None:
    """Each malformed input yields exactly the expected errors at the expected lines."""
    errors = errors_of(text)
    assert [(line, key) for line, key, _ in errors] == [(line, key) for line, key, _ in expected]
    for (_, _, message), (_, _, fragment) in zip(errors, expected, strict=True):
        assert fragment in message


def test_load_routes_unreadable_and_not_utf8(tmp_path: Path) -> None:
    """A missing file or a non-UTF-8 file is a RoutesError naming the file (and line for bad bytes)."""
    with pytest.raises(RoutesError) as caught:
        load_routes(tmp_path / "nope.yaml")
    assert caught.value.errors[0].key == "file" and "cannot read" in caught.value.errors[0].message
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(UPSTREAMS.encode() + b"# caf\xe9\n")
    with pytest.raises(RoutesError) as caught:
        load_routes(bad)
    assert (caught.value.errors[0].file, caught.value.errors[0].line) == (str(bad), 4)


# --- schema and loader agree ----------------------------------------------------------------------

SCHEMA_AND_LOADER_REJECT = [
    "routes: []\n",
    UPSTREAMS + "extra: 1\n",
    "upstreams:\n  legacy: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'ftp://h'}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'http://h', host: both}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'h:80'}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'http://h', pool_size: 0}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'http://h', timeout: 0}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'http://h', colour: 1}\n  new: {url: 'http://h'}\n",
    UPSTREAMS + "default: nwe\n",
    UPSTREAMS + "shadow: {queue: 0}\n",
    UPSTREAMS + "shadow: {aa_sample: 2}\n",
    UPSTREAMS + "shadow: {redact: x}\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: nwe}]\n",
    UPSTREAMS + "routes: [{name: a b, match: {path: /a}, target: new}]\n",
    UPSTREAMS + "routes: [{name: default, match: {path: /a}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: a}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a/}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a//b}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a/../b}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: '/{r*}/b'}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: '/a/:id'}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a, methods: [get]}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a, methods: []}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a, verbs: [GET]}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, shadow: {sample: 1.5}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, shadow: {timeout: 0}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, shadow: {writes: 1}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {ignore: [x]}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {sets: ['$.a[-1]']}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {tolerance: -1}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {headers: ['a b']}}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {nulls: true}}]\n",
]

# What only the loader can see: relations between routes and the writes/dry-run rule.
LOADER_ONLY = [
    UPSTREAMS
    + "routes: [{name: a, match: {path: /a}, target: new}, {name: a, match: {path: /b}, target: new}]\n",
    UPSTREAMS
    + "routes: [{name: a, match: {path: /a}, target: new}, {name: b, match: {path: /A}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: '/a/{x}/{x}'}, target: new}]\n",
    UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, shadow: {writes: true}}]\n",
    "upstreams:\n  legacy: {url: 'http://h:99999'}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'https://h', ca_file: /no/such/ca.pem}\n  new: {url: 'http://h'}\n",
    "upstreams:\n  legacy: {url: 'http://h', ca_file: /etc/hostname}\n  new: {url: 'http://h'}\n",
]


def _schema_errors(text: str) -> list[Any]:
    return list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text)))


@pytest.mark.parametrize("text", SCHEMA_AND_LOADER_REJECT)
def test_schema_and_loader_reject(text: str) -> None:
    """A structurally bad file is rejected by both the JSON Schema and the loader."""
    assert _schema_errors(text), "the schema accepted it"
    errors_of(text)


@pytest.mark.parametrize("text", LOADER_ONLY)
def test_loader_only_errors(text: str) -> None:
    """Cross-route and semantic problems pass the schema but the loader rejects them."""
    assert _schema_errors(text) == []
    errors_of(text)


@pytest.mark.parametrize(
    "text",
    [
        UPSTREAMS,
        UPSTREAMS + "routes:\n",
        UPSTREAMS + "routes: [{name: a, match: {path: '/*'}, target: new}]\n",
        "upstreams:\n  legacy: {url: 'https://h/api', host: upstream}\n"
        "  new: {url: 'http://h', host: client}\n",
        UPSTREAMS + "routes: [{name: a.b_c-1, match: {path: '/', methods: [GET, M-SEARCH]}, target: new}]\n",
        UPSTREAMS + "routes: [{name: a, match: {path: '/x;y/{id}/{rest*}'}, target: legacy,"
        " shadow: {writes: true}, compare: {ignore: ['$', '$.a[0].b[*]'], null_equals_missing: true}}]\n",
        UPSTREAMS + "routes: [{name: a, match: {path: '/a'}, target: legacy,"
        " compare: {generated: ['$.id', '$.items[*].created_at']}}]\n",
    ],
)
def test_schema_and_loader_accept(text: str) -> None:
    """A good file is accepted by both the schema and the loader."""
    assert _schema_errors(text) == []
    parse_routes(text, "good.yaml")


def test_compare_generated_is_loaded() -> None:
    """compare.generated lists JSON paths, kept in the route's CompareRules (empty by default)."""
    text = UPSTREAMS + "routes: [{name: a, match: {path: /a}, target: new, compare: {generated: [$.id]}}]\n"
    [route] = parse_routes(text, "g.yaml").routes
    assert route.compare.generated == ("$.id",)
    assert CompareRules().generated == ()


# --- JSON paths -----------------------------------------------------------------------------------


def test_parse_path() -> None:
    """The compare-rule JSON path dialect parses names, indices and [*]; anything else is refused."""
    assert parse_path("$") == ()
    assert parse_path("$.items[*].id") == ("items", WILDCARD, "id")
    assert parse_path("$.a[0][12].b_c-d") == ("a", 0, 12, "b_c-d")
    for bad in ("", "items", "$.", "$..a", "$[01]", "$[-1]", "$['a']", "$.a.", "$a", "$[*", "$.1a"):
        with pytest.raises(JsonPathError):
            parse_path(bad)


# --- the index against a naive reference ----------------------------------------------------------

_SEGMENT = st.sampled_from(["a", "A", "b", "users", "{p}", "{q}", "{r}"])
_PATH_SEGMENT = st.sampled_from(["a", "A", "b", "B", "users", "USERS", "x", "1"])


def _reference(
    routes: list[tuple[str, str, list[str] | None]], method: str, path: str
) -> tuple[str, dict[str, str], str]:
    """Linear scan in the documented specificity order, with one regex per template."""

    def key(template: str) -> tuple[int, ...]:
        kinds = [
            3 if s.endswith("*}") or s == "*" else 1 if s.startswith("{") else 0
            for s in template[1:].split("/")
            if s
        ]
        return tuple(kinds) if kinds and kinds[-1] == 3 else (*kinds, 2)

    order = sorted(range(len(routes)), key=lambda i: (key(routes[i][1]), i))
    for i in order:
        name, template, methods = routes[i]
        effective = None if methods is None else set(methods) | ({"HEAD"} if "GET" in methods else set())
        if effective is not None and method not in effective:
            continue
        pattern, wild = "", None
        for s in (s for s in template[1:].split("/") if s):
            if s.endswith("*}"):
                wild = s[1:-2]
                pattern += f"(?:/(?P<{wild}>.+?))?"
            elif s.startswith("{"):
                pattern += f"/(?P<{s[1:-1]}>[^/]+)"
            else:
                pattern += "/(?i:" + re.escape(s) + ")"
        found = re.fullmatch(pattern + "/?", path)
        if found is None:
            continue
        params = {k: v or "" for k, v in found.groupdict().items()}
        pieces = [
            params[s[1:-1]] if s.startswith("{") else s for s in template[1:].split("/") if s and "*" not in s
        ]
        if wild is not None and params[wild]:
            pieces.append(params[wild])
        return name, params, "/" + "/".join(pieces)
    return "default", {}, path


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(_SEGMENT, max_size=3),
            st.booleans(),
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(["GET", "POST", "HEAD"]), min_size=1, max_size=2, unique=True),
            ),
        ),
        max_size=8,
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
            st.lists(_PATH_SEGMENT, max_size=5),
            st.booleans(),
        ),
        max_size=12,
    ),
)
def test_index_agrees_with_reference(
    specs: list[tuple[list[str], bool, list[str] | None]], requests: list[tuple[str, list[str], bool]]
) -> None:
    """For random tables the loader accepts, the indexed matcher equals a naive linear regex scan."""
    routes = []
    for i, (segments, wildcard, methods) in enumerate(specs):
        named = [s.replace("}", f"{j}}}") if s.startswith("{") else s for j, s in enumerate(segments)]
        template = "/" + "/".join(named + (["{rest*}"] if wildcard else []))
        routes.append((f"r{i}", template, methods))
    text = (
        UPSTREAMS
        + "routes:\n"
        + "".join(
            f"  - {{name: {n}, match: {{path: '{t}'"
            + (f", methods: [{', '.join(m)}]" if m else "")
            + "}, target: new}\n"
            for n, t, m in routes
        )
    )
    try:
        t = parse_routes(text, "random.yaml")
    except RoutesError as exc:
        kinds = ("ties with", "duplicates", "unreachable")
        assert all(any(kind in e.message for kind in kinds) for e in exc.errors), exc
        return
    for method, segments, slash in requests:
        path = "/" + "/".join(segments) + ("/" if slash and segments else "")
        found = t.match(method, path)
        assert (found.route.name, dict(found.params), found.forward_path) == _reference(routes, method, path)


def test_ties_are_reported_with_other_errors() -> None:
    """A tie is reported in the same load as an unrelated error elsewhere in the file."""
    errors = errors_of(
        "upstreams:\n  legacy: {url: 'http://h', pool_size: 0}\n  new: {url: 'http://h'}\nroutes:\n"
        "  - {name: a, match: {path: /x}, target: new}\n"
        "  - {name: b, match: {path: /x}, target: new}\n"
    )
    assert [(line, key) for line, key, _ in errors] == [
        (2, "upstreams.legacy.pool_size"),
        (6, "routes[1].match"),
    ]


def test_table_built_by_hand_or_replaced_recompiles() -> None:
    """A RouteTable made directly or by dataclasses.replace matches its own routes, in priority order."""
    base = table(USERS)
    by_hand = RouteTable(
        routes=tuple(reversed(base.routes)),
        upstreams=base.upstreams,
        default=base.default,
        source="x",
        sha256="0",
    )
    assert by_hand.routes == base.routes
    assert route_of(by_hand, "GET", "/api/v1/users/me") == "users-me"
    fewer = dataclasses.replace(base, routes=tuple(r for r in base.routes if r.name != "users-me"))
    assert route_of(fewer, "GET", "/api/v1/users/me") == "users-get"
    assert route_of(base, "GET", "/api/v1/users/me") == "users-me"


# --- per-route limits -------------------------------------------------------------------------------


def test_route_limits_max_body() -> None:
    """limits.max_body is read per route (bytes, 0: no limit); a route without it leaves it to --max-body."""
    t = table(
        """\
        - {name: a, match: {path: /a}, target: new, limits: {max_body: 1024}}
        - {name: b, match: {path: /b}, target: new, limits: {max_body: 0}}
        - {name: c, match: {path: /c}, target: new}
        """
    )
    assert [(r.name, r.max_body) for r in t.routes] == [("a", 1024), ("b", 0), ("c", None)]
    assert t.default.max_body is None


@pytest.mark.parametrize(
    ("limits", "key", "fragment"),
    [
        ("{max_body: -1}", "routes[0].limits.max_body", "integer from 0"),
        ("{max_body: 1.5}", "routes[0].limits.max_body", "integer"),
        ("{max_body: big}", "routes[0].limits.max_body", "integer"),
        ("{max_bdy: 10}", "routes[0].limits.max_bdy", "max_bdy"),
        ("[1]", "routes[0].limits", "mapping"),
    ],
)
def test_route_limits_errors(limits: str, key: str, fragment: str) -> None:
    """A bad limits value is a load error with the file's line and the exact key."""
    route = f"  - {{name: a, match: {{path: /a}}, target: new, limits: {limits}}}\n"
    errors = errors_of(UPSTREAMS + "routes:\n" + route)
    assert [(line, k) for line, k, _ in errors] == [(5, key)]
    assert fragment in errors[0][2]


def test_route_limits_in_schema() -> None:
    """The schema accepts what the loader accepts for limits, and refuses a negative size."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    route = {"name": "a", "match": {"path": "/a"}, "target": "new", "limits": {"max_body": 10}}
    doc = {"upstreams": {"legacy": {"url": "http://l"}, "new": {"url": "http://n"}}, "routes": [route]}
    assert list(validator.iter_errors(doc)) == []
    route["limits"] = {"max_body": -1}
    assert list(validator.iter_errors(doc)) != []


# --- stable verdicts: the ready_* settings ----------------------------------------------------------


def test_stable_verdict_settings_default_and_load() -> None:
    """ready_min_count, ready_min_s and ready_margin have defaults and are read from the shadow key."""
    assert table("").shadow_settings.ready_margin == 0.005
    assert table("").shadow_settings.ready_min_s == 60.0 and table("").shadow_settings.ready_min_count == 100
    head = UPSTREAMS + "shadow: {ready_min_count: 20, ready_min_s: 5, ready_margin: 0.01}\n"
    settings = parse_routes(head + "routes: []\n", "t.yaml").shadow_settings
    assert (settings.ready_min_count, settings.ready_min_s, settings.ready_margin) == (20, 5.0, 0.01)


def test_stable_verdict_settings_are_validated_with_lines() -> None:
    text = UPSTREAMS + "shadow:\n  ready_min_count: -1\n  ready_min_s: fast\n  ready_margin: 2\nroutes: []\n"
    first = UPSTREAMS.count("\n") + 2
    assert errors_of(text) == [
        (first, "shadow.ready_min_count", "must be an integer from 0 to 2147483648; got -1"),
        (first + 1, "shadow.ready_min_s", "must be a number >= 0 and <= 86400; got a string"),
        (first + 2, "shadow.ready_margin", "must be a number >= 0 and <= 1; got 2"),
    ]


def test_ready_margin_must_be_below_the_match_threshold() -> None:
    text = UPSTREAMS + "shadow:\n  match_threshold: 0.5\n  ready_margin: 0.6\nroutes: []\n"
    ((line, key, message),) = errors_of(text)
    assert (line, key) == (UPSTREAMS.count("\n") + 3, "shadow.ready_margin")
    assert message.startswith("must be below match_threshold (0.5)")


def test_route_fingerprint_changes_with_target_methods_path_and_compare_only() -> None:
    """The epoch fingerprint: a flip, other methods, another path or other compare rules change it; the
    shadow sample rate or the route's line do not."""
    base = 'name: r\n  match: {methods: [GET], path: "/a"}\n  target: legacy\n'
    fp = table("- " + base).routes[0].fingerprint
    sampled = base.replace("legacy", "legacy\n  shadow: {sample: 0.5}")
    assert fp == table("\n\n- " + sampled).routes[0].fingerprint
    for changed in (base.replace("legacy", "new"), base.replace("[GET]", "[GET, POST]"),
                    base.replace('"/a"', '"/b"'), base + "  compare: {ignore: [$.at]}\n"):  # fmt: skip
        assert table("- " + changed).routes[0].fingerprint != fp
