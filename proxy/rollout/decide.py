"""What the autopilot does with one route now: promote, hold (and what blocks) or roll back. Pure.

The evidence is the route's report in its current epoch (verdict, match rate, comparisons, the shadow's
error rates and p99s) and the traffic each side actually served since the stage began
(``proxy.rollout.served``). Stage 0 (shadowing) has no traffic served by new, so its gate reads the
shadow's comparisons instead: comparisons for the count, shadow error rates and p99s for the margins.

Rollback triggers are checked first and apply in every stage above 0 (a migrated route too: a route whose
evidence says it regressed since its flip goes back to shadowing), paused or not: a pause stops
promotions, never a rollback. The reasons are sentences a person reads in ``strangler rollout status``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from proxy.routing.model import RolloutPlan

__all__ = ["HOLD", "PROMOTE", "ROLLBACK", "Decision", "Evidence", "SideCounts", "blocking", "decide"]

PROMOTE: Final = "promote"
HOLD: Final = "hold"
ROLLBACK: Final = "rollback"


@dataclass(frozen=True)
class SideCounts:
    """Requests one side served in a window: count, 5xx (connect errors included: the gateway answers
    them 502), connect errors (502) and p99 in seconds (None: no timing)."""

    requests: int = 0
    errors_5xx: int = 0
    connect_errors: int = 0
    p99_s: float | None = None

    @property
    def error_rate(self) -> float | None:
        """5xx share, None without requests."""
        return self.errors_5xx / self.requests if self.requests else None

    @property
    def connect_rate(self) -> float | None:
        """Connect-error share, None without requests."""
        return self.connect_errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Evidence:
    """What one decision is based on (stored with every transition as its ``evidence``)."""

    verdict: str | None = None  # the report's words (READY, NOT READY, ...), shown
    ready: bool = False  # the verdict is READY (what the gate checks)
    verdict_reasons: tuple[str, ...] = ()
    match_rate: float | None = None
    compared: int = 0
    epoch_started: float | None = None
    # The shadow's view (report): error rates and p99 in seconds per side ("legacy", "new").
    shadow_error: dict[str, float | None] = field(default_factory=dict)
    shadow_p99_s: dict[str, float | None] = field(default_factory=dict)
    # Served since the stage began, summed over every replica.
    new: SideCounts = field(default_factory=SideCounts)
    legacy: SideCounts = field(default_factory=SideCounts)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the audit event's evidence)."""
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """``action`` (promote / hold / rollback), the stage index it leads to, and the reasons."""

    action: str
    to_stage: int
    reasons: tuple[str, ...]


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _errors(stage: int, ev: Evidence) -> tuple[float | None, float | None]:
    """(new, legacy) error rates for the gate: shadow's in stage 0, else what was served."""
    if stage == 0:
        return ev.shadow_error.get("new"), ev.shadow_error.get("legacy")
    legacy = ev.legacy.error_rate
    return ev.new.error_rate, legacy if legacy is not None else ev.shadow_error.get("legacy")


def _p99s(stage: int, ev: Evidence) -> tuple[float | None, float | None]:
    """(new, legacy) p99 for the gate and triggers: shadow's in stage 0; else served, legacy's from the
    shadow when it served too little to time (a migrated route)."""
    if stage == 0:
        return ev.shadow_p99_s.get("new"), ev.shadow_p99_s.get("legacy")
    legacy = ev.legacy.p99_s if ev.legacy.p99_s is not None else ev.shadow_p99_s.get("legacy")
    return ev.new.p99_s, legacy


def triggered(plan: RolloutPlan, stage: int, ev: Evidence) -> list[str]:
    """The rollback triggers that fire (stage above 0, once new served ``rollback.min_count`` requests)."""
    rb = plan.rollback
    if stage == 0 or ev.new.requests < rb.min_count:
        return []
    out = []
    rate = ev.new.error_rate or 0.0
    if rate > rb.error_rate:
        out.append(f"new 5xx {_pct(rate)} > {_pct(rb.error_rate)} (rollback.error_rate)")
    connect = ev.new.connect_rate or 0.0
    if connect > rb.connect_error_rate:
        out.append(f"new connect errors {_pct(connect)} > {_pct(rb.connect_error_rate)} "
                   "(rollback.connect_error_rate)")  # fmt: skip
    new_p99, legacy_p99 = _p99s(stage, ev)
    if rb.p99_ratio and new_p99 is not None and legacy_p99 and new_p99 > rb.p99_ratio * legacy_p99:
        out.append(f"new p99 {_ms(new_p99)} > {rb.p99_ratio:g} x legacy p99 {_ms(legacy_p99)} "
                   "(rollback.p99_ratio)")  # fmt: skip
    if ev.match_rate is not None and ev.compared >= rb.min_count and 1 - ev.match_rate > rb.diff_rate:
        out.append(f"difference rate {_pct(1 - ev.match_rate)} > {_pct(rb.diff_rate)} in the current "
                   "epoch (rollback.diff_rate)")  # fmt: skip
    return out


def blocking(plan: RolloutPlan, stage: int, since: float, ev: Evidence, now: float) -> list[str]:
    """What keeps the route from its next stage ([]: the gate holds)."""
    gate = plan.gate
    out = []
    if gate.verdict and not ev.ready:
        out.append(f"verdict {ev.verdict or 'unknown'}")
    left = gate.min_s - (now - since)
    if left > 0:
        out.append(f"needs {math.ceil(left)} s more in the stage (gate.min_s {gate.min_s:g})")
    if stage == 0:
        if ev.compared < gate.min_count:
            out.append(f"{ev.compared} of {gate.min_count} comparisons (gate.min_count)")
    elif ev.new.requests < gate.min_count:
        out.append(f"{ev.new.requests} of {gate.min_count} requests served by new in the stage "
                   "(gate.min_count)")  # fmt: skip
    new_err, legacy_err = _errors(stage, ev)
    if new_err is not None and new_err > (legacy_err or 0.0) + gate.error_margin:
        out.append(f"new 5xx {_pct(new_err)} > legacy {_pct(legacy_err or 0.0)} + {_pct(gate.error_margin)}")
    new_p99, legacy_p99 = _p99s(stage, ev)
    if gate.p99_ratio and new_p99 is not None and legacy_p99 and new_p99 > gate.p99_ratio * legacy_p99:
        out.append(f"new p99 {_ms(new_p99)} > {gate.p99_ratio:g} x legacy p99 {_ms(legacy_p99)}")
    return out


def decide(plan: RolloutPlan, stage: int, since: float, paused: bool, ev: Evidence, now: float) -> Decision:
    """The autopilot's move for a route in ``stage`` (index) of ``plan`` since ``since``."""
    fired = triggered(plan, stage, ev)
    if fired:
        return Decision(ROLLBACK, 0, tuple(fired))
    if stage >= len(plan.stages) - 1:
        return Decision(HOLD, stage, ("migrated: the last stage",))
    blocks = blocking(plan, stage, since, ev, now)
    if paused:
        blocks = ["paused by hand (strangler rollout resume)", *blocks]
    if blocks:
        return Decision(HOLD, stage, tuple(blocks))
    return Decision(PROMOTE, stage + 1, ())
