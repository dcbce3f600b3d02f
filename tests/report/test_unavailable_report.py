"""COMPARISON UNAVAILABLE in the report model and every renderer (terminal, JSON, Markdown, HTML)."""

from __future__ import annotations

import textwrap

import orjson

from proxy.report.cli import render, suggest
from proxy.report.model import NOT_ENOUGH, READY, UNANSWERED_MIN, UNAVAILABLE, build_report
from proxy.routing.table import parse_routes
from proxy.shadow.store import RouteStats, bucket_of

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 10, match_threshold: 0.95, ready_min_s: 0, ready_min_count: 0}
    routes:
      - name: stream
        match: {methods: [GET], path: /posts/stream}
        target: legacy
        shadow: {sample: 1.0}
      - name: posts-create
        match: {methods: [POST], path: /posts}
        target: new
        shadow: {sample: 1.0}
      - name: posts-get
        match: {methods: [GET], path: "/posts/{id}"}
        target: legacy
        shadow: {sample: 1.0}
""")
TABLE = parse_routes(ROUTES, "routes.yaml")
STREAM_WHY = "stream: responses are event streams / WebSockets, not compared"
WRITE_WHY = "writes: the route is served by new and legacy has no dry run, so writes are not compared"


def _compared(n: int, **extra: int) -> RouteStats:
    return RouteStats(
        "x", counters={"seen": n, "compared": n, "matched": n, **extra},
        latency={"control": {bucket_of(0.01): n}, "candidate": {bucket_of(0.01): n}},
    )  # fmt: skip


def test_each_reason_and_the_usual_verdicts_otherwise() -> None:
    """Streams, a flipped write route and a silent shadow side are COMPARISON UNAVAILABLE with their
    reason; a route with enough comparisons keeps its verdict; an ended streak (0) changes nothing."""
    report = build_report({
        "stream": RouteStats("stream", counters={"seen": 4, "unavailable_stream": 3,
                                                 "unavailable_websocket": 1}),
        "posts-create": _compared(50),  # compared before the flip: stale, writes are no longer compared
        "posts-get": _compared(40, **{"unanswered:new:timeout": UNANSWERED_MIN}),
        "mixed": _compared(20, unavailable_stream=2, **{"unanswered:new:connect": 0}),
    }, TABLE)  # fmt: skip
    verdicts = {r.name: (r.verdict, r.reasons) for r in report.routes}
    assert verdicts["stream"] == (UNAVAILABLE, [STREAM_WHY])
    assert verdicts["posts-create"] == (UNAVAILABLE, [WRITE_WHY])
    verdict, reasons = verdicts["posts-get"]  # READY on its counts, but nothing new is being compared
    assert verdict == UNAVAILABLE and reasons[0].startswith(
        "the shadow side (new) did not answer: no answer within the shadow timeout (timeout); the last "
        f"{UNANSWERED_MIN} shadow calls failed"
    )
    assert verdicts["mixed"] == (READY, [])
    below = build_report({"posts-get": _compared(3, **{"unanswered:new:connect": UNANSWERED_MIN - 1})}, TABLE)
    assert below.routes[2].verdict == NOT_ENOUGH


def test_renderers_show_unavailable_with_the_reason() -> None:
    """Terminal, JSON, Markdown and HTML each show the verdict and its reason; --suggest flips none."""
    stats = {"stream": RouteStats("stream", counters={"seen": 2, "unavailable_stream": 2})}
    report = build_report(stats, TABLE)
    terminal = render(report, "terminal")
    assert "COMPARISON UNAVAILABLE" in terminal and f"why: {STREAM_WHY}" in terminal
    assert "unavailable_stream 2" in terminal
    doc = orjson.loads(render(report, "json"))
    assert doc["routes"][0]["verdict"] == UNAVAILABLE and doc["routes"][0]["reasons"] == [STREAM_WHY]
    markdown = render(report, "markdown")
    assert "**COMPARISON UNAVAILABLE**" in markdown and f"- {STREAM_WHY}" in markdown
    html = render(report, "html")
    assert 'class="l COMPARISON_UNAVAILABLE"' in html and f'<span class="why">{STREAM_WHY}</span>' in html
    assert suggest(ROUTES, TABLE, report)[1] == []
