"""Express 4 and 5 path syntax translated to routes.yaml templates, or refused with the reason."""

from __future__ import annotations

import re

import pytest

from proxy.routing.express import Unexpressible, hint, translate
from proxy.routing.template import parse_template


@pytest.mark.parametrize(
    ("path", "major", "templates"),
    [
        ("/", 4, ("/",)),
        ("/users/:id", 4, ("/users/{id}",)),
        ("/users/:id", 5, ("/users/{id}",)),
        ("/users/:id?", 4, ("/users", "/users/{id}")),
        ("/users{/:id}", 5, ("/users", "/users/{id}")),
        ("/x{/:a}{/:b}", 5, ("/x", "/x/{a}", "/x/{b}", "/x/{a}/{b}")),
        ("/a/:b?/c", 4, ("/a/c", "/a/{b}/c")),
        ("/a/:x/:x", 4, ("/a/{x}/{x2}",)),
        ("/files/*", 4, ("/files/{rest*}",)),
        ("*", 4, ("/{rest*}",)),
        ("/files/:path*", 4, ("/files/{path*}",)),
        ("/files/*splat", 5, ("/files/{splat*}",)),
        ("/files{/*splat}", 5, ("/files", "/files/{splat*}")),
        ('/quoted/:"my-id"', 5, ("/quoted/{my_id}",)),
        ("/v1\\.0/x", 5, ("/v1.0/x",)),
        ("users/:id", 4, ("/users/{id}",)),  # Express accepts a path without its leading slash
    ],
)
def test_translate(path: str, major: int, templates: tuple[str, ...]) -> None:
    """Each Express form becomes the templates that match the same requests, and they parse."""
    assert translate(path, major).templates == templates
    for template in templates:
        parse_template(template)


def test_regex_constraint_is_dropped_with_a_note() -> None:
    """A :param(regex) becomes {param}; the note says the gateway does not check the constraint."""
    found = translate("/orders/:id(\\d+)", 4)
    assert found.templates == ("/orders/{id}",)
    assert found.notes == ("the constraint (\\d+) on :id is not checked by the gateway",)


@pytest.mark.parametrize(
    ("path", "major", "reason"),
    [
        ("/a/*/b", 4, "a '*' before the last segment"),
        ("/a/*rest/b", 5, "a wildcard (*rest) before the last segment"),
        ("/a/:p+/b", 4, "a repeated parameter (:p+) before the last segment"),
        ("/:from-:to", 4, "segment ':from-:to' mixes text with a parameter"),
        ("/file.:ext", 5, "segment 'file.:ext' mixes text with a parameter"),
        ("/ab?cd", 4, "segment 'ab?cd' mixes text"),
        ("/a b", 5, "characters a template literal cannot hold"),
        ("/a//b", 4, "an empty segment"),
        ("/x{/:a}{/:b}{/:c}{/:d}", 5, "optional combinations"),
    ],
)
def test_unexpressible(path: str, major: int, reason: str) -> None:
    """What no template can hold is refused with the reason."""
    with pytest.raises(Unexpressible, match=re.escape(reason)):
        translate(path, major)


def test_hint_for_routes_yaml() -> None:
    """Templates written the Express way get what to write; valid templates get no hint."""
    assert hint("/a/{id}/*") is None
    assert hint("/a/:id") == "write parameters as {id}, not :id: the path is '/a/{id}'"
    assert hint("/a/{id?}") == (
        "an optional part needs one route per form: write 2 routes, with paths '/a' and '/a/{id}'"
    )
    assert hint("/x:y/:id") == "write parameters as {id}, not :id: the path is '/x:y/{id}'"  # ':' mid-segment
