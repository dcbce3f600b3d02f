"""The evidence of every auto route, read from the stores: its report (current epoch) and what each side
served since its stage began. Shared by the leader (``proxy.autopilot.controller``) and the CLI, so a
promotion by hand is judged on exactly what the autopilot would see."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.report.model import READY, RouteReport, gather
from proxy.rollout.decide import Evidence
from proxy.rollout.served import ServedReader, side_counts, since_base
from proxy.rollout.state import RouteState
from proxy.routing.model import AUTO, RolloutPlan, Route
from proxy.routing.table import RouteTable
from proxy.shadow.store import DiffStore

__all__ = ["auto_routes", "collect", "evidence_of", "plan_of"]


def auto_routes(table: RouteTable) -> list[Route]:
    """The routes the autopilot moves (``target: auto``), in file order."""
    return sorted((r for r in table.routes if r.target == AUTO), key=lambda r: r.line)


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


async def collect(
    store: DiffStore, reader: ServedReader, table: RouteTable, states: Mapping[str, RouteState], now: float
) -> dict[str, Evidence]:
    """Evidence per auto route of ``table`` (served counts since its stored stage began; ``now`` for a
    route never seen)."""
    routes = auto_routes(table)
    if not routes:
        return {}
    report = await gather(store, table, now=now)
    out = {}
    for route in routes:
        state = states.get(route.name)
        since = state.since if state is not None else now
        served = await reader.window(since, now)
        if state is not None:
            served = since_base(served, since, state.base_at, state.base)
        out[route.name] = evidence_of(report.route(route.name), served, route.name)
    return out
