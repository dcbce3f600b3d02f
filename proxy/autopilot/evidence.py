"""The evidence of every auto route, read from the stores: its report (current epoch) and what each side
served since its stage began. Shared by the leader (``proxy.autopilot.controller``) and the CLI, so a
promotion by hand is judged on exactly what the autopilot would see. The pure half (``evidence_of``,
``plan_of``) lives in ``proxy.report.evidence``, so the report's progress view judges the same way."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.report.evidence import evidence_of, plan_of
from proxy.report.model import gather
from proxy.rollout.decide import Evidence
from proxy.rollout.served import ServedReader, evidence_start, since_base
from proxy.rollout.state import RouteState
from proxy.routing.model import AUTO, Route
from proxy.routing.table import RouteTable
from proxy.shadow.store import DiffStore

__all__ = ["auto_routes", "collect", "evidence_of", "plan_of"]


def auto_routes(table: RouteTable) -> list[Route]:
    """The routes the autopilot moves (``target: auto``), in file order."""
    return sorted((r for r in table.routes if r.target == AUTO), key=lambda r: r.line)


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
        start = evidence_start(state.since if state is not None else now, now)
        served = await reader.window(start, now)
        if state is not None:  # the base applies only while the window still starts in its bucket
            served = since_base(served, start, state.base_at, state.base)
        out[route.name] = evidence_of(report.route(route.name), served, route.name)
    return out
