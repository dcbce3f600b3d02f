"""The autopilot's decisions, as a table: each gate blocks a promotion with a reason a person can read,
each rollback trigger fires on its own, and the edges (pause, last stage, too few requests) hold."""

from __future__ import annotations

import pytest
from rollout_rig import PLAN

from proxy.report.model import NOT_READY, READY
from proxy.rollout.decide import HOLD, PROMOTE, ROLLBACK, Evidence, SideCounts, blocking, decide
from proxy.routing.model import Gate, RollbackTriggers, RolloutPlan

NOW = 1000.0
SINCE = NOW - 60  # longer than PLAN's gate.min_s (30)
GOOD = Evidence(
    verdict=READY, ready=True, match_rate=1.0, compared=50,
    shadow_error={"legacy": 0.0, "new": 0.0}, shadow_p99_s={"legacy": 0.010, "new": 0.011},
    new=SideCounts(40, 0, 0, 0.01), legacy=SideCounts(400, 1, 0, 0.01),
)  # fmt: skip
P99 = RolloutPlan(
    stages=(0, 10, 100), gate=Gate(min_s=30.0, min_count=10, p99_ratio=1.5),
    rollback=RollbackTriggers(p99_ratio=3.0, min_count=10),
)  # fmt: skip


def with_(ev: Evidence, **changes: object) -> Evidence:
    from dataclasses import replace

    if "verdict" in changes:
        changes.setdefault("ready", changes["verdict"] == READY)
    return replace(ev, **changes)  # type: ignore[arg-type]  # test table: fields by name


def test_every_gate_held_promotes_to_the_next_stage() -> None:
    """Verdict READY, time, count, error and p99 margins all met: promote to the next stage."""
    assert decide(PLAN, 1, SINCE, False, GOOD, NOW).action == PROMOTE
    assert decide(PLAN, 1, SINCE, False, GOOD, NOW).to_stage == 2
    assert decide(PLAN, 0, SINCE, False, GOOD, NOW).to_stage == 1


@pytest.mark.parametrize(
    ("stage", "since", "evidence", "reason"),
    [
        (0, SINCE, with_(GOOD, verdict=NOT_READY), "verdict NOT READY"),
        (1, NOW - 20, GOOD, "needs 10 s more in the stage"),
        (0, SINCE, with_(GOOD, compared=4), "4 of 10 comparisons"),
        (1, SINCE, with_(GOOD, new=SideCounts(4, 0, 0, 0.01)), "4 of 10 requests served by new"),
        (1, SINCE, with_(GOOD, new=SideCounts(100, 3, 0, 0.01)), "new 5xx 3.0% > legacy 0.2% + 1.0%"),
        (0, SINCE, with_(GOOD, shadow_error={"legacy": 0.0, "new": 0.02}), "new 5xx 2.0% > legacy 0.0%"),
    ],
)  # fmt: skip
def test_each_gate_blocks_with_its_reason(stage: int, since: float, evidence: Evidence, reason: str) -> None:
    """One unmet gate holds the route, and the reason says which and by how much."""
    decision = decide(PLAN, stage, since, False, evidence, NOW)
    assert decision.action == HOLD
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_the_p99_gate_compares_served_p99_in_a_canary_and_shadow_p99_in_stage_0() -> None:
    """New's p99 above gate.p99_ratio times legacy's blocks: served timings in a canary, shadow's before."""
    slow = with_(GOOD, new=SideCounts(40, 0, 0, 0.02), legacy=SideCounts(400, 0, 0, 0.01))
    assert any("new p99 20 ms > 1.5 x legacy p99 10 ms" in r for r in blocking(P99, 1, SINCE, slow, NOW))
    shadow_slow = with_(GOOD, shadow_p99_s={"legacy": 0.010, "new": 0.030})
    assert any("new p99 30 ms" in r for r in blocking(P99, 0, SINCE, shadow_slow, NOW))
    assert blocking(P99, 1, SINCE, GOOD, NOW) == []


def test_a_verdict_gate_off_does_not_need_ready() -> None:
    """gate.verdict false: a NOT READY route may still be promoted on the other gates."""
    plan = RolloutPlan(stages=(0, 100), gate=Gate(verdict=False, min_s=0, min_count=0))
    assert decide(plan, 0, NOW, False, with_(GOOD, verdict=NOT_READY), NOW).action == PROMOTE


@pytest.mark.parametrize(
    ("evidence", "trigger"),
    [
        (with_(GOOD, new=SideCounts(100, 6, 0, 0.01)), "rollback.error_rate"),
        (with_(GOOD, new=SideCounts(100, 6, 6, 0.01)), "rollback.connect_error_rate"),
        (with_(GOOD, match_rate=0.7), "rollback.diff_rate"),
    ],
)
def test_each_rollback_trigger_sends_the_route_back_to_shadowing(evidence: Evidence, trigger: str) -> None:
    """A trigger firing in a canary (or migrated) stage rolls back to stage 0, naming the trigger."""
    for stage in (1, 2):
        decision = decide(PLAN, stage, SINCE, False, evidence, NOW)
        assert (decision.action, decision.to_stage) == (ROLLBACK, 0)
        assert any(trigger in r for r in decision.reasons), decision.reasons


def test_the_p99_trigger_uses_the_shadow_s_legacy_p99_once_legacy_serves_nothing() -> None:
    """Migrated (legacy serves no request): new's p99 is compared with legacy's shadow p99."""
    slow = with_(GOOD, new=SideCounts(100, 0, 0, 0.05), legacy=SideCounts(), shadow_p99_s={"legacy": 0.01})
    decision = decide(P99, 2, SINCE, False, slow, NOW)
    assert decision.action == ROLLBACK and "rollback.p99_ratio" in decision.reasons[0]


def test_triggers_wait_for_min_count_requests_and_never_fire_in_stage_0() -> None:
    """Below rollback.min_count requests served by new, or while shadowing, no trigger fires."""
    few = with_(GOOD, new=SideCounts(5, 5, 5, 0.01))
    assert decide(PLAN, 1, SINCE, False, few, NOW).action == HOLD
    awful = with_(GOOD, new=SideCounts(100, 100, 0, 0.01), match_rate=0.1, verdict=NOT_READY)
    assert decide(PLAN, 0, SINCE, False, awful, NOW).action == HOLD


def test_a_paused_route_is_held_but_still_rolled_back() -> None:
    """A pause stops promotions (and says so first), never a rollback."""
    held = decide(PLAN, 1, SINCE, True, GOOD, NOW)
    assert held.action == HOLD and held.reasons[0].startswith("paused by hand")
    bad = with_(GOOD, new=SideCounts(100, 50, 0, 0.01))
    assert decide(PLAN, 1, SINCE, True, bad, NOW).action == ROLLBACK


def test_the_last_stage_holds_as_migrated() -> None:
    """At 100 % there is nothing to promote to: hold, "migrated"."""
    decision = decide(PLAN, 2, SINCE, False, GOOD, NOW)
    assert decision.action == HOLD and "migrated" in decision.reasons[0]
