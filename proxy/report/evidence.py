"""One auto route's evidence from its report line and served counts. Pure.

Here, below the autopilot, so the report's progress view (``proxy.report.progress``) judges a route on
exactly what the leader (``proxy.autopilot.controller``) and ``strangler rollout`` see: the autopilot
imports these, the report cannot import the autopilot.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.report.model import READY, RouteReport
from proxy.rollout.decide import Evidence
from proxy.rollout.served import side_counts
from proxy.routing.model import RolloutPlan, Route

__all__ = ["evidence_of", "plan_of"]


def plan_of(route: Route) -> RolloutPlan:
    """The route's plan (the defaults when the file gave none)."""
    return route.rollout if route.rollout is not None else RolloutPlan()


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def evidence_of(rr: RouteReport | None, served: Mapping[str, int], route: str) -> Evidence:
    """One route's evidence from its report line (None: nothing recorded) and the served fields."""
    new, legacy = side_counts(served, route, "new"), side_counts(served, route, "legacy")
    if rr is None:
        return Evidence(new=new, legacy=legacy)
    return Evidence(
        verdict=rr.verdict,
        ready=rr.verdict == READY,
        verdict_reasons=tuple(rr.reasons),
        match_rate=rr.match_rate,
        compared=rr.compared,
        epoch_started=(rr.epoch or {}).get("started"),
        shadow_error=dict(rr.error_rate),
        shadow_p99_s={side: _seconds(rr.latency_ms.get(side, {}).get("p99")) for side in ("legacy", "new")},
        new=new,
        legacy=legacy,
    )
