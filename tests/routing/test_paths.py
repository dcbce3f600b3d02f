"""proxy.paths.canonicalise: the path policy, case by case, plus properties over arbitrary targets."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.routing.paths import BadPath, canonicalise
from proxy.routing.table import parse_routes

ACCEPTED = [
    (b"/", "/", ""),
    (b"/api/v1/users/1", "/api/v1/users/1", ""),
    (b"/API/v1/Users/1/", "/API/v1/Users/1/", ""),  # case and one trailing slash kept; routing ignores them
    (b"/a?", "/a", ""),
    (b"/a?x=1&y=2", "/a", "x=1&y=2"),
    (b"/a?x=%2F&y=a/b?c", "/a", "x=%2F&y=a/b?c"),  # query passed through unchanged, even %2F and '?'
    (b"/a?q=%zz", "/a", "q=%zz"),  # escapes in the query are not checked
    (b"/%61%70%69/v1", "/%61%70%69/v1", ""),  # escapes are never decoded (Express matches literals raw)
    (b"/%7euser/%2D%2e%5f", "/%7Euser/%2D%2E%5F", ""),  # only their hex is upper-cased
    (b"/caf%c3%a9", "/caf%C3%A9", ""),  # other escapes kept, hex upper-cased
    (b"/a%20b", "/a%20b", ""),
    (b"/a%3fb", "/a%3Fb", ""),  # an encoded '?' stays encoded: it is not the query separator
    (b"/a%23b", "/a%23b", ""),
    (b"/a%25", "/a%25", ""),
    (b"/a%252F", "/a%252F", ""),  # a literal '%2F' text, not an encoded slash
    (b"/users;jsessionid=1", "/users;jsessionid=1", ""),  # ';' is ordinary
    (b"/a;/b", "/a;/b", ""),
    (b"/.well-known/x", "/.well-known/x", ""),  # starts with a dot but is not a dot segment
    (b"/a/...", "/a/...", ""),
    (b"/a/.b/..c", "/a/.b/..c", ""),
    (b"/a/", "/a/", ""),
    (b"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", ""),
]


@pytest.mark.parametrize(("target", "path", "query"), ACCEPTED)
def test_accepted_targets(target: bytes, path: str, query: str) -> None:
    """Accepted targets canonicalise to the documented path and untouched query."""
    assert canonicalise(target) == (path, query)


REFUSED = [
    (b"", "must start with '/'"),
    (b"api/v1", "must start with '/'"),
    (b"*", "asterisk-form"),
    (b"http://evil/api/v1/users", "absolute-form"),
    (b"HTTP://evil/", "absolute-form"),
    (b"/a%2Fb", "encoded slash"),
    (b"/a%2fb", "encoded slash"),
    (b"/a%5Cb", "encoded backslash"),
    (b"/a%5cb", "encoded backslash"),
    (b"/a\\b", "backslash"),
    (b"/a%00", "control character %00"),
    (b"/a%0a", "control character %0A"),
    (b"/a%7f", "control character %7F"),
    (b"/a\x00", "control character 0x00"),
    (b"/a\tb", "control character 0x09"),
    (b"/a\x7f", "control character 0x7F"),
    (b"/a b", "a space"),
    (b"/a?b c", "a space"),
    (b"/a?b\x01", "control character 0x01"),
    (b"/caf\xc3\xa9", "non-ASCII byte 0xC3"),
    (b"/a#frag", "'#'"),
    (b"/a?x#frag", "'#'"),
    (b"/a%", "invalid percent-escape"),
    (b"/a%4", "invalid percent-escape"),
    (b"/a%zz", "invalid percent-escape"),
    (b"/a%%41", "invalid percent-escape"),
    (b"/a%4g", "invalid percent-escape"),
    (b"/.", "dot segment"),
    (b"/..", "dot segment"),
    (b"/a/./b", "dot segment"),
    (b"/a/../b", "dot segment"),
    (b"/a/..", "dot segment"),
    (b"/a/../", "dot segment"),
    (b"/a/%2e%2e/b", "dot segment"),
    (b"/a/%2E/b", "dot segment"),
    (b"/a/.%2e", "dot segment"),
    (b"/%2e", "dot segment"),
    (b"//", "empty path segments"),
    (b"//evil.example/x", "empty path segments"),
    (b"/a//b", "empty path segments"),
    (b"/a//", "empty path segments"),
]


@pytest.mark.parametrize(("target", "reason"), REFUSED)
def test_refused_targets(target: bytes, reason: str) -> None:
    """Confusable targets raise BadPath with a reason that names the problem."""
    with pytest.raises(BadPath) as caught:
        canonicalise(target)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_bad_path_is_a_value_error() -> None:
    """BadPath is a ValueError, so generic handlers treat it as bad input."""
    assert issubclass(BadPath, ValueError)


TABLE = parse_routes(
    """
upstreams:
  legacy: {url: "http://127.0.0.1:3000"}
  new: {url: "http://127.0.0.1:8000"}
routes:
  - {name: users-get, match: {methods: [GET], path: "/api/v1/users/{id}"}, target: new}
  - {name: users-posts, match: {methods: [GET], path: "/api/v1/users/{id}/posts"}, target: new}
  - {name: users, match: {path: /api/v1/users}, target: new}
  - {name: admin, match: {path: "/admin/{rest*}"}, target: legacy}
  - {name: files, match: {path: "/Files/{dir}/*"}, target: new}
  - {name: semi, match: {path: "/a;b/{x}"}, target: new}
""",
    "property.yaml",
)

# Targets built from pieces that the policy cares about, so the property explores the edges.
_PIECES = st.sampled_from(
    [
        "api",
        "API",
        "v1",
        "users",
        "Users",
        "1",
        "posts",
        "admin",
        "files",
        "a;b",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2F",
        "%2f",
        "%5C",
        "%41",
        "%7e",
        "%c3%a9",
        "%00",
        "%",
        "%zz",
        "",
        ";",
        "x y",
        "#",
        "\\",
        "é",
        "~",
        "-",
    ]
)


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    """Request targets assembled from edge-case segments, an optional trailing slash and query."""
    segments = draw(st.lists(_PIECES, max_size=6))
    path = "/" + "/".join(segments) + draw(st.sampled_from(["", "/", "//"]))
    query = draw(st.sampled_from(["", "?", "?a=1", "?a=%2F&b=/..", "?x y"]))
    return (path + query).encode("utf-8")


@settings(max_examples=600, deadline=None)
@given(st.one_of(targets(), st.binary(max_size=40).map(lambda b: b"/" + b)))
@example(b"/API/v1/users/1/")
@example(b"/%61pi/v1/users/%31")
def test_canonical_is_idempotent_and_routes_as_forwarded(target: bytes) -> None:
    """For any target: canonicalise is idempotent, and the forwarded path routes to the same route."""
    try:
        path, query = canonicalise(target)
    except BadPath:
        return
    assert canonicalise(path.encode("ascii")) == (path, "")
    if query:
        assert canonicalise(f"{path}?{query}".encode("ascii")) == (path, query)
    for method in ("GET", "POST"):
        first = TABLE.match(method, path)
        # What the gateway forwards is itself canonical and routes to the same place.
        assert canonicalise(first.forward_path.encode("ascii")) == (first.forward_path, "")
        again = TABLE.match(method, first.forward_path)
        assert again.route is first.route
        assert again.forward_path == first.forward_path
        assert again.params == first.params
