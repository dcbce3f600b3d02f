"""Fallbacks in the report: counted by the shadow (per epoch, all replicas), one line per route in every
format."""

from __future__ import annotations

import textwrap

import orjson
from support.memstore import MemoryStore

from proxy.report.html import render_html
from proxy.report.model import build_report
from proxy.report.text import render_markdown, render_terminal
from proxy.routing.table import parse_routes
from proxy.shadow.admission import Shadower

TABLE = parse_routes(
    textwrap.dedent("""\
        upstreams:
          legacy: {url: "http://127.0.0.1:3000"}
          new: {url: "http://127.0.0.1:8000"}
        routes:
          - name: users
            match: {methods: [GET], path: /users}
            target: new
            shadow: {sample: 0.1}
            fallback: true
            circuit_breaker: true
          - name: posts
            match: {methods: [GET], path: /posts}
            target: legacy
            shadow: {sample: 0.1}
    """),
    "routes.yaml",
)
LINE = "served by legacy in new's place: circuit 40, connect 2 (the circuit breaker was open)"


async def test_fallbacks_are_counted_and_reported_per_route() -> None:
    """Shadower.fallback counts by reason in the store; the report gives the route one line, in the
    terminal, Markdown and HTML, and the counts in JSON; a route without fallbacks has no such line."""
    store = MemoryStore()
    shadower = Shadower(TABLE.shadow_settings, {}, store)
    users = next(r for r in TABLE.routes if r.name == "users")
    posts = next(r for r in TABLE.routes if r.name == "posts")
    for _ in range(2):
        shadower.fallback(users, "connect")
    for _ in range(40):
        shadower.fallback(users, "circuit")
    assert shadower.wants(posts, "GET") in (True, False)  # the other route has counts too ("seen")
    await store.flush()
    report = build_report(await store.stats(), TABLE)
    by_name = {r.name: r for r in report.routes}
    assert by_name["users"].fallbacks == {"circuit": 40, "connect": 2}
    assert by_name["posts"].fallbacks == {}
    assert LINE in render_terminal(report)
    assert f"- {LINE}" in render_markdown(report)
    assert LINE.replace("'", "&#x27;") in render_html(report)
    doc = orjson.loads(orjson.dumps(report.as_json()))
    users_doc = next(r for r in doc["routes"] if r["name"] == "users")
    assert users_doc["fallbacks"] == {"circuit": 40, "connect": 2}
    assert render_terminal(report).count("served by legacy in new's place") == 1
