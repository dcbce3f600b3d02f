"""routes.yaml `target: auto` and `rollout:` (issue 12): defaults, per-route overrides, errors with lines."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from proxy.routing.cli import check
from proxy.routing.model import AUTO, Gate, RollbackTriggers, RolloutPlan, StickyKey
from proxy.routing.table import RoutesError, RouteTable, parse_routes

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "proxy" / "routing" / "routes.schema.json").read_text())
UPSTREAMS = """\
upstreams:
  legacy: {url: "http://127.0.0.1:3000"}
  new: {url: "http://127.0.0.1:8000"}
"""


def load(text: str) -> RouteTable:
    """Parse upstreams plus ``text`` (dedented)."""
    return parse_routes(UPSTREAMS + textwrap.dedent(text), "r.yaml")


def errors(text: str) -> list[tuple[int, str, str]]:
    """(line, key, message) of every error for upstreams plus ``text``."""
    with pytest.raises(RoutesError) as caught:
        load(text)
    assert all(e.file == "r.yaml" for e in caught.value.errors)
    return [(e.line, e.key, e.message) for e in caught.value.errors]


def schema_errors(text: str) -> list[Any]:
    """What the JSON schema says about upstreams plus ``text``."""
    document = yaml.safe_load(UPSTREAMS + textwrap.dedent(text))
    return list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))


DEFAULTS = """\
rollout:
  stages: [0, 5, 25, 100]
  sticky: "header:X-User"
  testers: {header: X-Tester, value: "yes"}
  gate: {min_s: 30, min_count: 10}
  rollback: {error_rate: 0.1}
"""


def test_auto_route_takes_the_top_level_defaults() -> None:
    """An auto route without its own rollout gets the top-level plan, RolloutPlan's defaults for the rest."""
    t = load(DEFAULTS + "routes:\n  - {name: a, match: {path: /a}, target: auto}\n")
    route = t.routes[0]
    assert route.target == AUTO
    assert route.rollout == RolloutPlan(
        stages=(0, 5, 25, 100),
        sticky=StickyKey("header", "x-user"),
        testers=("x-tester", "yes"),
        gate=Gate(min_s=30.0, min_count=10),
        rollback=RollbackTriggers(error_rate=0.1),
    )


def test_route_rollout_overrides_the_defaults_field_by_field() -> None:
    """A route's rollout wins field by field; gate and rollback merge key by key over the defaults."""
    t = load(
        DEFAULTS
        + """\
routes:
  - name: a
    match: {path: /a}
    target: auto
    rollout:
      sticky: jwt_sub
      gate: {verdict: false, p99_ratio: 0}
      rollback: {min_count: 5}
"""
    )
    plan = t.routes[0].rollout
    assert plan is not None
    assert plan.stages == (0, 5, 25, 100)  # from the defaults
    assert plan.sticky == StickyKey("jwt_sub")
    assert plan.testers == ("x-tester", "yes")
    assert plan.gate == Gate(verdict=False, min_s=30.0, min_count=10, p99_ratio=0.0)
    assert plan.rollback == RollbackTriggers(error_rate=0.1, min_count=5)


def test_auto_route_with_only_its_own_rollout_loads() -> None:
    """No top-level defaults: the route's own rollout is enough; cookie keys keep their case."""
    t = load("routes:\n  - {name: a, match: {path: /a}, target: auto, rollout: {sticky: 'cookie:Sid'}}\n")
    plan = t.routes[0].rollout
    assert plan == RolloutPlan(sticky=StickyKey("cookie", "Sid"))


def test_auto_without_a_plan_is_an_error_at_the_target() -> None:
    """target: auto with neither a top-level nor a route rollout is refused, naming line and key."""
    found = errors("routes:\n  - name: a\n    match: {path: /a}\n    target: auto\n")
    assert len(found) == 1
    line, key, message = found[0]
    assert (line, key) == (7, "routes[0].target")
    assert "'auto' needs a rollout plan" in message


def test_hand_set_target_keeps_its_rollout_inactive() -> None:
    """A rollout on a legacy/new route is parsed and kept; `routes check` says a hand-set target overrides."""
    text = UPSTREAMS + "routes:\n  - {name: b, match: {path: /b}, target: new, rollout: {stages: [0, 100]}}\n"
    t = parse_routes(text, "r.yaml")
    assert t.routes[0].target == "new"
    assert t.routes[0].rollout == RolloutPlan(stages=(0, 100))
    legacy_only = load(DEFAULTS + "routes:\n  - {name: c, match: {path: /c}, target: legacy}\n")
    assert legacy_only.routes[0].rollout is None  # the defaults are for auto routes only


def test_routes_check_shows_the_plan_and_inactive_plans(tmp_path: Path) -> None:
    """`strangler routes check` prints each route's plan, and says when a hand-set target overrides it."""
    path = tmp_path / "routes.yaml"
    path.write_text(
        UPSTREAMS
        + DEFAULTS
        + "routes:\n  - {name: a, match: {path: /a}, target: auto}\n"
        + "  - {name: b, match: {path: /b}, target: legacy, rollout: {stages: [0, 100]}}\n"
    )
    out = io.StringIO()
    assert check(str(path), out=out) == 0
    text = out.getvalue()
    assert "rollout a: stages 0/5/25/100%, sticky header:x-user, testers x-tester: yes" in text
    assert "rollout b: inactive (target: legacy set by hand overrides it)" in text


@pytest.mark.parametrize(
    ("rollout", "line", "key", "fragment"),
    [
        ("{stages: [1, 100]}", 4, "rollout.stages", "must start with 0"),
        ("{stages: [0, 50]}", 4, "rollout.stages", "must end with 100"),
        ("{stages: [0, 50, 50, 100]}", 4, "rollout.stages[2]", "must be above the stage before it (50)"),
        ("{stages: [0, 101]}", 4, "rollout.stages[1]", "integer from 0 to 100"),
        ("{stages: [0, 0.5, 100]}", 4, "rollout.stages[1]", "integer from 0 to 100"),
        ("{stages: []}", 4, "rollout.stages", "list of percentages"),
        ("{sticky: user}", 4, "rollout.sticky", "'ip', 'jwt_sub', 'header:NAME' or 'cookie:NAME'"),
        ("{sticky: 'header:X User'}", 4, "rollout.sticky", "not a valid header name"),
        ("{sticky: 'cookie:'}", 4, "rollout.sticky", "not a valid cookie name"),
        ("{testers: {header: X-T}}", 4, "rollout.testers", "missing required key 'value'"),
        ("{testers: {header: X-T, value: ' a'}}", 4, "rollout.testers.value", "without leading or trailing"),
        ("{gate: {verdict: maybe}}", 4, "rollout.gate.verdict", "true or false"),
        ("{gate: {min_count: -1}}", 4, "rollout.gate.min_count", "integer from 0"),
        ("{gate: {error_margin: 2}}", 4, "rollout.gate.error_margin", "<= 1"),
        ("{gate: {ready: true}}", 4, "rollout.gate.ready", "unknown key 'ready'"),
        ("{rollback: {min_count: 0}}", 4, "rollout.rollback.min_count", "integer from 1"),
        ("{rollback: {diff_rate: 1.5}}", 4, "rollout.rollback.diff_rate", "<= 1"),
        ("{rollback: {p99_ratio: -1}}", 4, "rollout.rollback.p99_ratio", ">= 0"),
        ("{stage: [0, 100]}", 4, "rollout.stage", "unknown key 'stage'"),
        ("[0, 100]", 4, "rollout", "must be a mapping"),
    ],
)
def test_top_level_rollout_errors_name_line_and_key(rollout: str, line: int, key: str, fragment: str) -> None:
    """Each bad rollout value is refused with its line, dotted key and a message saying what is wrong."""
    text = f"rollout: {rollout}\nroutes:\n  - {{name: a, match: {{path: /a}}, target: auto}}\n"
    found = errors(text)
    assert [(ln, k) for ln, k, _ in found] == [(line, key)], found
    assert fragment in found[0][2]
    assert schema_errors(text), "the schema accepted it"


def test_route_rollout_errors_are_reported_at_their_own_line() -> None:
    """An error inside a route's rollout names the route's key path and the offending line."""
    found = errors(
        """\
routes:
  - name: a
    match: {path: /a}
    target: auto
    rollout:
      stages: [0, 10, 100]
      sticky: "jwt"
  - name: b
    match: {path: /b}
    target: legacy
    rollout:
      gate: {min_s: -5}
"""
    )
    assert [(ln, k) for ln, k, _ in found] == [
        (10, "routes[0].rollout.sticky"),
        (15, "routes[1].rollout.gate.min_s"),
    ]


def test_broken_defaults_are_reported_once_not_per_auto_route() -> None:
    """An invalid top-level rollout is one error; the auto routes relying on it add none of their own."""
    found = errors(
        "rollout: {stages: [0, 10]}\nroutes:\n"
        "  - {name: a, match: {path: /a}, target: auto}\n  - {name: b, match: {path: /b}, target: auto}\n"
    )
    assert [(ln, k) for ln, k, _ in found] == [(4, "rollout.stages")]


def test_default_upstream_cannot_be_auto() -> None:
    """The default route has no plan: `default: auto` is refused."""
    found = errors("default: auto\n")
    assert [(ln, k) for ln, k, _ in found] == [(4, "default")]


def test_schema_accepts_what_the_loader_accepts() -> None:
    """A full rollout (defaults and a route override) passes both the loader and the JSON schema."""
    text = DEFAULTS + (
        "routes:\n  - {name: a, match: {path: /a}, target: auto,"
        " rollout: {sticky: ip, gate: {verdict: true}, rollback: {p99_ratio: 0}}}\n"
    )
    load(text)
    assert schema_errors(text) == []


def test_fingerprint_spans_the_rollout_but_not_a_target_change() -> None:
    """The epoch (fingerprint) of an auto route ignores its plan (a stage change keeps the epoch); the
    target is part of it, so moving a route to or from auto starts a new one."""
    route = "  - {name: a, match: {path: /a}, target: %s%s}\n"
    auto = load("routes:\n" + route % ("auto", ", rollout: {stages: [0, 1, 100]}")).routes[0]
    other_plan = load("routes:\n" + route % ("auto", ", rollout: {stages: [0, 50, 100], sticky: jwt_sub}"))
    by_hand = load("routes:\n" + route % ("legacy", "")).routes[0]
    assert other_plan.routes[0].fingerprint == auto.fingerprint
    assert by_hand.fingerprint != auto.fingerprint
