"""The migration as a whole: every route's stage, what blocks it and the next action, the traffic legacy
still serves, the recent transitions, and the share served by new and the match rate over time. Pure:
``proxy.report.progress_io.read_progress`` reads the inputs, the renderers show the result.

Stages, in the order a route moves through them:

- ``legacy``: served by legacy, not shadowed (no evidence is being collected);
- ``shadowing``: served by legacy and shadowed to new (or ``target: auto`` at 0 %);
- ``canary``: ``target: auto`` between 0 and 100 % (the label says ``canary 10%``);
- ``migrated``: ``target: new``, or ``target: auto`` at 100 %;
- ``legacy no longer needed``: migrated, and in the window legacy served none of the route's requests
  (fallbacks are served by legacy, so none of those either) while new served some.

A route served by new whose current-epoch shadow verdict is NOT READY (or whose autopilot rollback
triggers fire) is flagged: its next action is "roll back". Auto routes are judged by the autopilot's own
pure rules (``proxy.rollout.decide``) on the evidence the leader sees (``proxy.report.evidence``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from proxy.report.evidence import evidence_of, plan_of
from proxy.report.model import NOT_ENOUGH, NOT_READY, READY, UNAVAILABLE, Report, RouteReport
from proxy.report.stable import READY_SINCE
from proxy.rollout.decide import HOLD, PROMOTE, ROLLBACK, decide
from proxy.rollout.served import BUCKET_S, evidence_start, since_base
from proxy.rollout.state import Event, RouteState, initial, reconcile
from proxy.routing.model import AUTO, Route
from proxy.routing.table import RouteTable

__all__ = [
    "CANARY", "LEGACY", "MIGRATED", "NOT_NEEDED", "SHADOWING", "STAGES", "Point", "Progress", "RouteProgress",
    "Transition", "age", "build_progress", "parse_window", "window_text",
]  # fmt: skip

LEGACY: Final = "legacy"
SHADOWING: Final = "shadowing"
CANARY: Final = "canary"
MIGRATED: Final = "migrated"
NOT_NEEDED: Final = "legacy no longer needed"
STAGES: Final = (LEGACY, SHADOWING, CANARY, MIGRATED, NOT_NEEDED)
DEFAULT_WINDOW_S: Final = 3600.0
MAX_POINTS: Final = 60  # points per chart line: buckets are merged to at most this many
MAX_LINES: Final = 6  # routes drawn on a chart besides the overall line (the busiest)
TRANSITIONS: Final = 20


@dataclass
class RouteProgress:
    """One route's place in the migration (``served_*``: requests each side served in the window)."""

    name: str
    target: str
    stage: str
    label: str  # the stage as shown: "canary 10%", "migrated", ...
    percent: int  # the share new is meant to serve, 0..100
    served_new: int
    served_legacy: int
    verdict: str | None
    match_rate: float | None
    compared: int
    action: str  # the next action's verb: shadow, wait, flip, promote, fix, paused, roll back, stop legacy
    next: str  # the next action, a sentence
    blocks: list[str]
    rollback: bool = False
    fallbacks: dict[str, int] = field(default_factory=dict)  # the current epoch's, by reason
    since: float | None = None  # an auto route's stage began
    paused: bool = False

    @property
    def new_share(self) -> float | None:
        """The share of the window's requests new served (None: no traffic)."""
        total = self.served_new + self.served_legacy
        return self.served_new / total if total else None


@dataclass
class Transition:
    """One audit event (``proxy.rollout.state.Event``) as shown."""

    at: float
    route: str
    from_pct: int
    to_pct: int
    action: str
    who: str
    why: str


@dataclass
class Point:
    """One chart point: bucket start, the overall value and each drawn route's (None: no data)."""

    t: float
    overall: float | None
    routes: dict[str, float | None]


@dataclass
class Progress:
    """The migration overview (see the module docstring)."""

    generated_at: float
    window_s: float
    routes: list[RouteProgress]
    stages: dict[str, int]  # routes per stage, every stage listed
    legacy_requests: int  # served by legacy in the window, every route and the default route
    total_requests: int
    legacy_by_route: list[tuple[str, int]]  # routes legacy still served in the window, most first
    default_route: dict[str, int]  # the default route's served counts: {"legacy": n, "new": n}
    transitions: list[Transition]
    share: list[Point]  # share served by new over time
    match: list[Point]  # match rate over time
    bucket_s: int = BUCKET_S

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``progress`` in ``/report.json`` and ``--format json``)."""
        doc = asdict(self)
        for row, rp in zip(doc["routes"], self.routes, strict=True):
            row["new_share"] = rp.new_share
        return doc

    def route(self, name: str) -> RouteProgress | None:
        """The named route's progress, if any."""
        return next((r for r in self.routes if r.name == name), None)


def parse_window(text: str) -> float:
    """``30m``, ``1h``, ``2d``, ``90s`` or seconds as a number -> seconds (ValueError naming the value)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ValueError(f"window {text!r}: expected a duration such as 30m, 1h or 1d") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"window {text!r}: must be a positive duration such as 30m, 1h or 1d")
    return value


def window_text(seconds: float) -> str:
    """``1h``, ``30 min``, ``2 d``: a window as said in sentences."""
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def age(seconds: float) -> str:
    """``40 s``, ``3 min``, ``2.5 h``: how long ago or how long for."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sum(buckets: Sequence[tuple[int, Mapping[str, int]]], since: float) -> dict[str, int]:
    """The fields of every bucket from the one holding ``since`` on, summed."""
    first = int(since // BUCKET_S) * BUCKET_S
    total: dict[str, int] = {}
    for start, fields in buckets:
        if start >= first:
            for name, n in fields.items():
                total[name] = total.get(name, 0) + n
    return total


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _short(rr: RouteReport, min_compared: int) -> str:
    """Why a route is not READY yet, in a few words: ``40 of 100`` or its first reason."""
    if rr.compared < min_compared:
        return f"{rr.compared} of {min_compared}"
    return rr.reasons[0] if rr.reasons else "no reason recorded"


def _legacy_action(
    route: Route, rr: RouteReport | None, report: Report, now: float
) -> tuple[str, str, list[str]]:
    """(verb, sentence, blocks) of a route legacy serves."""
    if route.shadow is None:
        return ("shadow", "shadow it: add shadow: to the route in routes.yaml to collect evidence",
                ["not shadowed: nothing is compared"])  # fmt: skip
    if rr is None:
        return "wait", "wait: no comparison recorded yet", ["no comparison recorded yet"]
    if rr.verdict == READY:
        since = rr.state.get(READY_SINCE)
        held = f" for {age(max(0.0, now - since))}" if since else ""
        return "flip", f"flip: READY{held} — set target: new or use auto", []
    if rr.verdict == NOT_ENOUGH:
        return "wait", f"wait: verdict {NOT_ENOUGH} ({_short(rr, report.min_compared)})", list(rr.reasons)
    if rr.verdict == UNAVAILABLE:
        return "fix", f"fix: comparison unavailable: {_short(rr, 0)}", list(rr.reasons)
    return "fix", f"fix new: verdict {rr.verdict} — {_short(rr, report.min_compared)}", list(rr.reasons)


def _regressed(rr: RouteReport | None) -> str | None:
    """The roll-back sentence of a route served by new whose current epoch says it regressed, else None."""
    if rr is None or rr.verdict != NOT_READY:
        return None
    flipped = bool(rr.epoch and str(rr.epoch.get("reason", "")).startswith("the flip"))
    what = "differing since its flip" if flipped else "NOT READY in the current epoch"
    return f"roll back: {what} (match {_rate(rr.match_rate)} in the current epoch)"


def _migrated(rp: RouteProgress, rr: RouteReport | None, window: str, target_hint: str) -> RouteProgress:
    """Finish a migrated route: roll back, legacy no longer needed, or what legacy still serves."""
    back = _regressed(rr)
    if back is not None:
        rp.action, rp.next, rp.rollback = "roll back", f"{back} — {target_hint}", True
        rp.blocks = list(rr.reasons) if rr is not None else []
        return rp
    if rp.served_legacy == 0 and rp.served_new > 0:
        rp.stage = rp.label = NOT_NEEDED
        rp.action = "stop legacy"
        rp.next = (
            f"stop legacy for this route: it served none of {rp.served_new:,} requests in the last {window}"
        )
        return rp
    if rp.served_legacy > 0:
        fell = ", ".join(f"{k} {n:,}" for k, n in rp.fallbacks.items())
        why = f"legacy still served {rp.served_legacy:,} requests in the last {window}"
        rp.action, rp.next = "wait", f"wait: {why}" + (f" (fallbacks this epoch: {fell})" if fell else "")
        rp.blocks = [why]
        return rp
    rp.action, rp.next = "wait", f"wait: no traffic in the last {window}, so no evidence legacy is unused"
    rp.blocks = [f"no traffic in the last {window}"]
    return rp


def _route(
    route: Route, rr: RouteReport | None, report: Report, state: RouteState | None,
    served: Sequence[tuple[int, Mapping[str, int]]], window_s: float, now: float,
) -> RouteProgress:  # fmt: skip
    in_window = _sum(served, now - window_s)
    window = window_text(window_s)
    rp = RouteProgress(
        name=route.name, target=route.target, stage=LEGACY, label=LEGACY, percent=0,
        served_new=in_window.get(f"{route.name}|new|n", 0),
        served_legacy=in_window.get(f"{route.name}|legacy|n", 0),
        verdict=rr.verdict if rr and route.shadow else None, match_rate=rr.match_rate if rr else None,
        compared=rr.compared if rr else 0, action="", next="", blocks=[],
        fallbacks=dict(rr.fallbacks) if rr else {},
    )  # fmt: skip
    if route.target == "new":
        rp.stage = rp.label = MIGRATED
        rp.percent = 100
        return _migrated(rp, rr, window, "set target: legacy in routes.yaml")
    if route.target != AUTO:
        rp.stage = rp.label = SHADOWING if route.shadow is not None else LEGACY
        rp.action, rp.next, rp.blocks = _legacy_action(route, rr, report, now)
        return rp
    plan = plan_of(route)
    current = state or initial(plan, now)
    fixed = reconcile(current, plan, now)
    current = fixed[0] if fixed is not None else current
    rp.percent, rp.since, rp.paused = current.percent, current.since, current.paused
    # Less what the stage began with, as the leader counts it (proxy.autopilot.evidence.collect).
    start = evidence_start(current.since, now)
    in_stage = since_base(_sum(served, start), start, current.base_at, current.base)
    evidence = evidence_of(rr, in_stage, route.name)
    decision = decide(plan, current.stage, current.since, current.paused, evidence, now)
    hint = f"strangler rollout rollback {route.name}"
    if current.percent >= 100:
        rp.stage = rp.label = MIGRATED
    elif current.percent > 0:
        rp.stage, rp.label = CANARY, f"canary {current.percent}%"
    else:
        rp.stage = rp.label = SHADOWING
    if decision.action == ROLLBACK:
        rp.action, rp.rollback, rp.blocks = "roll back", True, list(decision.reasons)
        rp.next = f"roll back: {decision.reasons[0]} — the autopilot rolls it back ({hint})"
        return rp
    if rp.stage == MIGRATED:
        return _migrated(rp, rr, window, hint)
    back = _regressed(rr) if current.percent > 0 else None
    if back is not None:
        rp.action, rp.next, rp.rollback, rp.blocks = (
            "roll back",
            f"{back} — {hint}",
            True,
            list(rr.reasons if rr else []),
        )
        return rp
    if decision.action == PROMOTE:
        nxt = plan.stages[decision.to_stage]
        rp.action, rp.next = "promote", f"promote: the gate holds; the autopilot moves it to {nxt}%"
        return rp
    assert decision.action == HOLD
    rp.blocks = list(decision.reasons)
    if current.paused:
        rp.action, rp.next = "paused", f"paused by hand: strangler rollout resume {route.name}"
        return rp
    first = rp.blocks[0] if rp.blocks else "the gate"
    if first.startswith("verdict ") and rr is not None and rr.verdict != READY:
        first = f"verdict {rr.verdict} ({_short(rr, report.min_compared)})"
    rp.action, rp.next = "wait", f"wait: {first}"
    return rp


def _merge(
    buckets: Sequence[tuple[int, Mapping[str, int]]], since: float
) -> list[tuple[int, dict[str, int]]]:
    """The window's buckets merged into at most ``MAX_POINTS`` groups (each at its first bucket's start)."""
    first = int(since // BUCKET_S) * BUCKET_S
    inside = [(t, f) for t, f in buckets if t >= first]
    size = max(1, math.ceil(len(inside) / MAX_POINTS))
    out: list[tuple[int, dict[str, int]]] = []
    for i in range(0, len(inside), size):
        total: dict[str, int] = {}
        for _, fields in inside[i : i + size]:
            for name, n in fields.items():
                total[name] = total.get(name, 0) + n
        out.append((inside[i][0], total))
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _busiest(totals: Mapping[str, int], names: Sequence[str]) -> list[str]:
    return sorted((n for n in names if totals.get(n, 0) > 0), key=lambda n: (-totals.get(n, 0), n))[
        :MAX_LINES
    ]


def _share_series(
    merged: list[tuple[int, dict[str, int]]], names: Sequence[str], routes: list[RouteProgress]
) -> list[Point]:
    """Share served by new per point: overall and per drawn route (the ones new serves, busiest first)."""
    totals = {r.name: r.served_new for r in routes}
    drawn = _busiest(totals, names)
    points = []
    for t, f in merged:
        new = sum(n for k, n in f.items() if k.endswith("|new|n"))
        legacy = sum(n for k, n in f.items() if k.endswith("|legacy|n"))
        per = {
            r: _ratio(f.get(f"{r}|new|n", 0), f.get(f"{r}|new|n", 0) + f.get(f"{r}|legacy|n", 0))
            for r in drawn
        }
        points.append(Point(float(t), _ratio(new, new + legacy), per))
    return points


def _match_series(merged: list[tuple[int, dict[str, int]]]) -> list[Point]:
    """Match rate per point: overall and per drawn route (the most compared)."""
    totals: dict[str, int] = {}
    for _, f in merged:
        for k, n in f.items():
            if k.endswith("|compared"):
                totals[k[: -len("|compared")]] = totals.get(k[: -len("|compared")], 0) + n
    drawn = _busiest(totals, sorted(totals))
    points = []
    for t, f in merged:
        compared = sum(n for k, n in f.items() if k.endswith("|compared"))
        differed = sum(n for k, n in f.items() if k.endswith("|differed"))
        per = {}
        for r in drawn:
            c = f.get(f"{r}|compared", 0)
            per[r] = 1 - min(c, f.get(f"{r}|differed", 0)) / c if c else None
        points.append(Point(float(t), 1 - min(compared, differed) / compared if compared else None, per))
    return points


def build_progress(
    table: RouteTable | None, report: Report, states: Mapping[str, RouteState], events: Sequence[Event],
    served: Sequence[tuple[int, Mapping[str, int]]], match: Sequence[tuple[int, Mapping[str, int]]],
    window_s: float = DEFAULT_WINDOW_S, now: float | None = None,
) -> Progress:  # fmt: skip
    """The overview from the report, the rollout states and events, the served-traffic buckets (from at
    least the earliest auto stage's start, for its evidence) and the match-rate buckets of the window."""
    now = report.generated_at if now is None else now
    declared = sorted(table.routes, key=lambda r: r.line) if table is not None else []
    routes = [
        _route(r, report.route(r.name), report, states.get(r.name), served, window_s, now) for r in declared
    ]
    stages = {s: sum(1 for r in routes if r.stage == s) for s in STAGES}
    in_window = _sum(served, now - window_s)
    legacy: dict[str, int] = {}
    total = 0
    for name, n in in_window.items():
        route, _, rest = name.partition("|")
        if rest in ("legacy|n", "new|n"):
            total += n
            if rest == "legacy|n" and n:
                legacy[route] = legacy.get(route, 0) + n
    default = table.default.name if table is not None else "default"
    merged_served = _merge(served, now - window_s)
    return Progress(
        generated_at=now,
        window_s=window_s,
        routes=routes,
        stages=stages,
        legacy_requests=sum(legacy.values()),
        total_requests=total,
        legacy_by_route=sorted(legacy.items(), key=lambda x: (-x[1], x[0])),
        default_route={side: in_window.get(f"{default}|{side}|n", 0) for side in ("legacy", "new")},
        transitions=[
            Transition(e.at, e.route, e.from_pct, e.to_pct, e.action, e.who, e.why)
            for e in list(events)[:TRANSITIONS]
        ],
        share=_share_series(merged_served, [r.name for r in routes], routes),
        match=_match_series(_merge(match, now - window_s)),
    )
