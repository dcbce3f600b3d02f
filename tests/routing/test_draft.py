"""The draft's grouping rules and its promise: whatever it holds, `parse_routes` accepts it."""

from __future__ import annotations

from proxy.routing.discover import Endpoint
from proxy.routing.draft import build_draft


def _e(template: str, *methods: str) -> Endpoint:
    return Endpoint(template, frozenset(methods) if methods else None, template, "app.js:1")


def test_same_shape_routes_merge_and_all_takes_every_method() -> None:
    """Param names do not split a shape; an 'all' endpoint makes one route for every method."""
    draft = build_draft(
        [_e("/o/{id}", "GET"), _e("/o/{orderId}", "PUT", "HEAD"), _e("/h/{x}", "GET"), _e("/h/{y}")]
    )
    table = draft.table()
    assert {(r.name, r.path, r.methods) for r in table.routes} == {
        ("h-x", "/h/{x}", None),
        ("get-o-id", "/o/{id}", frozenset({"GET", "HEAD"})),
        ("put-o-id", "/o/{id}", frozenset({"PUT"})),
    }


def test_a_route_the_checker_finds_unreachable_is_listed_not_written() -> None:
    """/a/{rest*} behind /a, /a/{x} and /a/{x}/{rest*} never wins: it moves to the skipped list."""
    draft = build_draft(
        [_e("/a", "GET"), _e("/a/{x}", "GET"), _e("/a/{x}/{rest*}", "GET"), _e("/a/{rest*}", "GET")]
    )
    assert [r.template for r in draft.routes] == ["/a", "/a/{x}", "/a/{x}/{rest*}"]
    [skipped] = draft.skipped
    assert skipped.express == "/a/{rest*}" and "unreachable" in skipped.reason
    assert "#   GET /a/{rest*}: route 'get-a-rest' is unreachable" in draft.render()
    draft.table()
