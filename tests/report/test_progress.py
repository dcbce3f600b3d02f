"""progress.py: each route's stage, next action and blocks as tables (pure), legacy's remaining traffic,
the series over time, windows and chart ticks; and ``strangler report`` opening with the overview."""

from __future__ import annotations

import asyncio
import io
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from report.progress_rig import ROUTES as RIG_ROUTES
from report.progress_rig import seed

from proxy.report.charts import nice_ticks, time_ticks
from proxy.report.cli import main
from proxy.report.model import NOT_ENOUGH, NOT_READY, READY, Report, RouteReport
from proxy.report.progress import (
    CANARY,
    LEGACY,
    MIGRATED,
    NOT_NEEDED,
    SHADOWING,
    build_progress,
    parse_window,
    window_text,
)  # fmt: skip
from proxy.rollout.state import Event, RouteState, plan_digest
from proxy.routing.table import parse_routes

NOW = 1_800_000_000.0
ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 100}
    rollout:
      stages: [0, 10, 100]
      gate: {min_s: 60, min_count: 50, p99_ratio: 0}
      rollback: {diff_rate: 0.05, p99_ratio: 0, min_count: 20}
    routes:
      - {name: plain, match: {methods: [GET], path: /plain}, target: legacy}
      - {name: shadowed, match: {methods: [GET], path: /shadowed}, target: legacy, shadow: {sample: 1.0}}
      - {name: flipped, match: {methods: [GET], path: /flipped}, target: new, shadow: {sample: 1.0}}
      - {name: auto, match: {methods: [GET], path: /auto}, target: auto, shadow: {sample: 1.0}}
""")
TABLE = parse_routes(ROUTES, "routes.yaml")
PLAN = next(r for r in TABLE.routes if r.name == "auto").rollout
assert PLAN is not None


def line(
    name: str, verdict: str = NOT_ENOUGH, compared: int = 0, match: float | None = None,
    reasons: list[str] | None = None, epoch_reason: str = "first recorded", **extra: Any,
) -> RouteReport:  # fmt: skip
    """A report line with just what the progress view reads."""
    return RouteReport(
        name=name, target=None, shadowed=True, counters={}, compared=compared, differed=0, noise=0,
        match_rate=match, paths=[], noise_paths=[],
        latency_ms={"legacy": {"p50": 5.0, "p99": 9.0}, "new": {"p50": 5.0, "p99": 9.0}},
        error_rate={"legacy": 0.0, "new": 0.0}, verdict=verdict, reasons=reasons or [],
        epoch={"id": "e.0", "started": NOW - 900, "reason": epoch_reason, "age_s": 900.0}, **extra,
    )  # fmt: skip


def report(*lines: RouteReport) -> Report:
    return Report(NOW, "routes.yaml", 100, 0.99, list(lines))


def served(
    route: str, new: int, legacy: int, t: float = NOW - 30, **more: int
) -> list[tuple[int, dict[str, int]]]:
    """One served bucket at ``t`` (``more``: other fields, ``auto_new_5xx`` for ``auto|new|5xx``)."""
    fields = {f"{route}|new|n": new, f"{route}|legacy|n": legacy}
    fields.update({k.replace("_", "|"): v for k, v in more.items()})
    return [(int(t // 10) * 10, fields)]


def state(percent: int, since: float = NOW - 30, paused: bool = False) -> RouteState:
    assert PLAN is not None
    return RouteState(PLAN.stages.index(percent), percent, paused, since, "test", plan_digest(PLAN))


READY_3MIN = line("shadowed", READY, 500, 1.0, state={"ready_since": NOW - 180})
NOT_READY_LINE = line("shadowed", NOT_READY, 500, 0.9, ["match rate 90.0% is below 99.0% (match_threshold)"])
REGRESSED = line(
    "flipped", NOT_READY, 500, 0.971, ["match rate 97.1% is below 99.0% (match_threshold)"],
    epoch_reason="the flip (legacy -> new)",
)  # fmt: skip

# (route, its report line, its stored state, served buckets) -> (stage, label, action, rollback, next starts)
CASES = [
    ("plain", None, None, served("plain", 0, 90), LEGACY, "legacy", "shadow", False, "shadow it:"),
    ("shadowed", line("shadowed", NOT_ENOUGH, 40, 1.0, ["40 of the 100 comparisons needed (min_compared)"]),
     None, [], SHADOWING, "shadowing", "wait", False, "wait: verdict NOT ENOUGH DATA (40 of 100)"),
    ("shadowed", READY_3MIN, None, [], SHADOWING, "shadowing", "flip", False,
     "flip: READY for 3 min — set target: new or use auto"),
    ("shadowed", NOT_READY_LINE, None, [], SHADOWING, "shadowing", "fix", False,
     "fix new: verdict NOT READY"),
    ("flipped", REGRESSED, None, served("flipped", 100, 0), MIGRATED, "migrated", "roll back", True,
     "roll back: differing since its flip (match 97.1% in the current epoch)"),
    ("flipped", line("flipped", READY, 500, 1.0), None, served("flipped", 100, 0), NOT_NEEDED,
     "legacy no longer needed", "stop legacy", False, "stop legacy for this route: it served none of 100"),
    ("flipped", line("flipped", READY, 500, 1.0, fallbacks={"connect": 3}), None, served("flipped", 97, 3),
     MIGRATED, "migrated", "wait", False, "wait: legacy still served 3 requests in the last 1 h (fallbacks"),
    ("flipped", line("flipped", READY, 500, 1.0), None, [], MIGRATED, "migrated", "wait", False,
     "wait: no traffic in the last 1 h"),
    ("auto", line("auto", READY, 500, 1.0), None, [], SHADOWING, "shadowing", "wait", False,
     "wait: needs 60 s more in the stage"),
    ("auto", line("auto", READY, 500, 1.0), state(0, NOW - 120), [], SHADOWING, "shadowing", "promote", False,
     "promote: the gate holds; the autopilot moves it to 10%"),
    ("auto", line("auto", READY, 500, 1.0), state(10), served("auto", 10, 90), CANARY, "canary 10%", "wait",
     False, "wait: needs 30 s more in the stage"),
    ("auto", line("auto", READY, 500, 1.0), state(10, paused=True), [], CANARY, "canary 10%", "paused", False,
     "paused by hand: strangler rollout resume auto"),
    ("auto", line("auto", READY, 500, 1.0), state(10), served("auto", 40, 60, auto_new_5xx=10), CANARY,
     "canary 10%", "roll back", True, "roll back: new 5xx 25.0% > 5.0% (rollback.error_rate)"),
    ("auto", line("auto", NOT_READY, 500, 0.97, ["match rate 97.0% is below 99.0%"]), state(10), [], CANARY,
     "canary 10%", "roll back", True, "roll back: NOT READY in the current epoch (match 97.0%"),
    ("auto", line("auto", READY, 500, 1.0), state(100), served("auto", 80, 0), NOT_NEEDED,
     "legacy no longer needed", "stop legacy", False, "stop legacy for this route"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "rr", "stored", "buckets", "stage", "label", "action", "rollback", "next_start"), CASES
)
def test_route_stage_and_next_action(
    name: str, rr: RouteReport | None, stored: RouteState | None, buckets: list[tuple[int, dict[str, int]]],
    stage: str, label: str, action: str, rollback: bool, next_start: str,
) -> None:  # fmt: skip
    """Each route gets its stage class, the next action (a sentence) and the roll-back flag."""
    lines = [rr] if rr is not None else []
    states = {name: stored} if stored is not None else {}
    p = build_progress(TABLE, report(*lines), states, [], buckets, [], 3600.0, NOW)
    rp = p.route(name)
    assert rp is not None
    assert (rp.stage, rp.label, rp.action, rp.rollback) == (stage, label, action, rollback), rp.next
    assert rp.next.startswith(next_start), rp.next


def test_blocks_list_what_keeps_a_canary_from_its_next_stage() -> None:
    """An auto route on hold lists every blocking reason of the autopilot's gate."""
    p = build_progress(TABLE, report(line("auto", READY, 500, 1.0)), {"auto": state(10)}, [],
                       served("auto", 10, 90), [], 3600.0, NOW)  # fmt: skip
    rp = p.route("auto")
    assert rp is not None
    assert rp.blocks == [
        "needs 30 s more in the stage (gate.min_s 60)",
        "10 of 50 requests served by new in the stage (gate.min_count)",
    ]


def test_legacy_remaining_counts_every_route_and_the_default_route_in_the_window() -> None:
    """Legacy's remaining traffic sums the window's buckets, the default route's included, and leaves older
    buckets out."""
    buckets = [
        (int(NOW - 7200), {"plain|legacy|n": 1000}),  # before the window
        (int(NOW - 600), {"plain|legacy|n": 30, "flipped|new|n": 50, "default|legacy|n": 15}),
        (int(NOW - 60), {"flipped|legacy|n": 2, "flipped|new|n": 48, "default|new|n": 5}),
    ]
    p = build_progress(TABLE, report(), {}, [], buckets, [], 3600.0, NOW)
    assert (p.legacy_requests, p.total_requests) == (47, 150)
    assert p.legacy_by_route == [("plain", 30), ("default", 15), ("flipped", 2)]
    assert p.default_route == {"legacy": 15, "new": 5}
    assert p.stages == {LEGACY: 1, SHADOWING: 2, CANARY: 0, MIGRATED: 1, NOT_NEEDED: 0}


def test_series_share_and_match_rate_over_time() -> None:
    """The share served by new and the match rate are computed per bucket, overall and per route, with a
    gap (None) where a bucket has no data."""
    served_buckets = [
        (int(NOW - 100), {"flipped|new|n": 30, "plain|legacy|n": 10}),
        (int(NOW - 90), {}),
        (int(NOW - 80), {"flipped|new|n": 10, "plain|legacy|n": 30}),
    ]
    match = [(int(NOW - 100), {"shadowed|compared": 100, "shadowed|differed": 3}), (int(NOW - 90), {})]
    p = build_progress(TABLE, report(), {}, [], served_buckets, match, 600.0, NOW)
    assert [pt.overall for pt in p.share] == [0.75, None, 0.25]
    assert [pt.routes for pt in p.share] == [{"flipped": 1.0}, {"flipped": None}, {"flipped": 1.0}]
    assert [pt.overall for pt in p.match] == [0.97, None]
    assert p.match[0].routes == {"shadowed": 0.97}


def test_long_windows_are_merged_into_at_most_sixty_points() -> None:
    """A day of 10 s buckets becomes at most 60 points per line, each summing its buckets."""
    buckets = [(int(NOW - 86400) + 10 * i, {"flipped|new|n": 1, "flipped|legacy|n": 1}) for i in range(8640)]
    p = build_progress(TABLE, report(), {}, [], buckets, [], 86400.0, NOW)
    assert len(p.share) <= 60 and all(pt.overall == 0.5 for pt in p.share)


def test_transitions_are_the_newest_twenty() -> None:
    """Recent transitions keep the events' order (newest first), at most twenty."""
    events = [Event("auto", 0, 10, "promote", "gw", "gate held", {}, NOW - i) for i in range(25)]
    p = build_progress(TABLE, report(), {}, events, [], [], 3600.0, NOW)
    assert len(p.transitions) == 20 and p.transitions[0].at == NOW


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("600", 600)]
)
def test_parse_window(text: str, seconds: float) -> None:
    """Windows are given as 90s, 30m, 1h, 2d or plain seconds."""
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "0", "1w", "abc"])
def test_parse_window_refuses_bad_values(text: str) -> None:
    """A bad window is refused with a message naming it and the expected form."""
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_window_text_and_ticks() -> None:
    """Windows read as 1 h / 30 min; axes get round ticks (1-2-5 steps, round times)."""
    assert (window_text(3600), window_text(1800), window_text(86400), window_text(45)) == (
        "1 h", "30 min", "1 d", "45 s",
    )  # fmt: skip
    assert nice_ticks(13.3) == [0, 5, 10, 15]
    ticks = time_ticks(NOW - 3600, NOW)
    assert 3 <= len(ticks) <= 7 and all(t % 600 == 0 for t in ticks)


@pytest.fixture
def rig_routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(RIG_ROUTES)
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_opens_with_the_overview(redis_url: str, redis_prefix: str, rig_routes: Path) -> None:
    """`strangler report` (terminal, Markdown, JSON) opens with routes by stage, legacy's remaining traffic,
    each route's next action (the regressed one flagged) and the recent transitions."""
    asyncio.run(seed(redis_url, redis_prefix, time.time()))
    base = ["--routes", str(rig_routes), "--redis-url", redis_url, "--prefix", redis_prefix]
    code, out, err = run(base)
    assert code == 0 and err == ""
    assert out.startswith("MIGRATION PROGRESS")
    assert "8 routes: 1 legacy, 2 shadowing, 1 canary, 3 migrated, 1 legacy no longer needed" in out
    assert "ROLL BACK suggested: comments" in out
    row = next(x for x in out.splitlines() if x.startswith("!! comments"))
    assert "roll back: differing since its flip (match 9" in row
    assert "posts-list blocks: 100 of 500 requests served by new in the stage (gate.min_count)" in out
    assert "posts-list rollback 10% -> 0%" in out and "default 1,200" in out
    assert out.index("recent transitions") < out.index("ROUTE         TARGET")
    code, md, _ = run([*base, "--format", "markdown", "--window", "15m"])
    assert code == 0 and md.startswith("## Migration progress")
    assert "| **comments** (roll back) | migrated |" in md and "window 15 min" in md
    code, js, _ = run([*base, "--format", "json"])
    doc = orjson.loads(js)
    rows = {r["name"]: r for r in doc["progress"]["routes"]}
    assert rows["posts-get"]["stage"] == NOT_NEEDED and rows["posts-get"]["new_share"] == 1.0
    assert rows["comments"]["rollback"] is True and rows["posts-list"]["label"] == "canary 10%"
    assert doc["progress"]["transitions"][0]["route"] == "posts-list" and doc["routes"]


def test_cli_route_shows_its_journey(redis_url: str, redis_prefix: str, rig_routes: Path) -> None:
    """`strangler report --route NAME` ends with the route's transitions, oldest first."""
    asyncio.run(seed(redis_url, redis_prefix, time.time()))
    code, out, err = run(["--routes", str(rig_routes), "--redis-url", redis_url, "--prefix", redis_prefix,
                          "--route", "posts-list"])  # fmt: skip
    assert code == 0 and err == ""
    journey = out[out.index("journey of posts-list") :].splitlines()[1:]
    assert [line.split()[5:8] for line in journey] == [
        ["promote", "0%", "->"], ["rollback", "10%", "->"], ["promote", "0%", "->"],
    ]  # fmt: skip


def test_cli_refuses_a_bad_window(redis_url: str, rig_routes: Path) -> None:
    """--window with a bad value exits 2 saying what is expected."""
    code, _, err = run(["--routes", str(rig_routes), "--redis-url", redis_url, "--window", "soon"])
    assert code == 2 and "--window" in err and "such as 30m" in err
