"""The circuit breaker as a pure state machine: events in, states and transitions out, an injected clock."""

from __future__ import annotations

from support.clock import ManualClock

from proxy.routing.model import BreakerSpec
from proxy.server.breaker import CLOSED, DENY, HALF_OPEN, NORMAL, OPEN, PROBE, Breaker


def make(**fields: float) -> tuple[Breaker, ManualClock, list[tuple[int, int]]]:
    """A breaker with ``fields`` over the defaults, its clock, and the transitions it announced."""
    clock = ManualClock()
    changes: list[tuple[int, int]] = []
    spec = BreakerSpec(**fields)  # type: ignore[arg-type]
    breaker = Breaker(spec, clock, lambda old, new: changes.append((old, new)))
    return breaker, clock, changes


def test_consecutive_failures_open_it() -> None:
    """``consecutive`` failures in a row open the circuit; a success in between starts the count again."""
    breaker, _, changes = make(consecutive=3, min_requests=1000)
    for ok in (False, False, True, False, False):
        assert breaker.admit() == NORMAL
        breaker.record(ok, False)
    assert breaker.state == CLOSED
    breaker.record(False, False)
    assert breaker.state == OPEN
    assert changes == [(CLOSED, OPEN)]


def test_failure_rate_in_the_window_opens_it() -> None:
    """A failure share of at least failure_rate among min_requests in the window opens it."""
    breaker, _, _ = make(consecutive=0, failure_rate=0.5, min_requests=10)
    for i in range(9):
        breaker.record(i % 2 == 0, False)  # 5 ok, 4 failed: under min_requests
    assert breaker.state == CLOSED
    breaker.record(False, False)  # 10 requests, 5 failed
    assert breaker.state == OPEN


def test_failures_older_than_the_window_do_not_count() -> None:
    """Results older than window_s leave the failure rate."""
    breaker, clock, _ = make(consecutive=0, failure_rate=0.5, min_requests=4, window_s=10.0)
    for _ in range(3):
        breaker.record(False, False)
    clock.advance(11.0)
    for ok in (True, True, True, False):
        breaker.record(ok, False)
    assert breaker.state == CLOSED  # 1 of 4 in the window


def test_open_denies_until_the_cool_down_then_admits_probes() -> None:
    """Open: every request is denied for cool_down_s; then half-open admits half_open probes, no more."""
    breaker, clock, changes = make(consecutive=1, cool_down_s=5.0, half_open=2)
    breaker.record(False, False)
    clock.advance(4.9)
    assert breaker.admit() == DENY
    clock.advance(0.2)
    assert [breaker.admit() for _ in range(3)] == [PROBE, PROBE, DENY]
    assert breaker.state == HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_all_probes_succeeding_close_it() -> None:
    """Half-open: every probe succeeding closes the circuit, and closed admits everything again."""
    breaker, clock, changes = make(consecutive=1, cool_down_s=1.0, half_open=2)
    breaker.record(False, False)
    clock.advance(1.0)
    assert breaker.admit() == PROBE and breaker.admit() == PROBE
    breaker.record(True, True)
    assert breaker.state == HALF_OPEN
    breaker.record(True, True)
    assert breaker.state == CLOSED
    assert breaker.admit() == NORMAL
    assert changes[-1] == (HALF_OPEN, CLOSED)


def test_a_failing_probe_opens_it_again() -> None:
    """Half-open: one probe failing opens the circuit for another cool-down."""
    breaker, clock, changes = make(consecutive=1, cool_down_s=1.0, half_open=3)
    breaker.record(False, False)
    clock.advance(1.0)
    assert breaker.admit() == PROBE
    breaker.record(False, True)
    assert breaker.state == OPEN
    assert breaker.admit() == DENY
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]


def test_results_of_requests_sent_before_it_opened_are_ignored() -> None:
    """Open or half-open, results of non-probe requests (sent while closed) change nothing."""
    breaker, clock, _ = make(consecutive=1, cool_down_s=1.0, half_open=1)
    breaker.record(False, False)
    breaker.record(True, False)
    assert breaker.state == OPEN
    clock.advance(1.0)
    assert breaker.admit() == PROBE
    breaker.record(False, False)
    assert breaker.state == HALF_OPEN


def test_a_released_probe_frees_its_slot() -> None:
    """A probe that ended without an outcome (its client left) lets another probe through."""
    breaker, clock, _ = make(consecutive=1, cool_down_s=1.0, half_open=1)
    breaker.record(False, False)
    clock.advance(1.0)
    assert breaker.admit() == PROBE
    assert breaker.admit() == DENY
    breaker.release(True)
    assert breaker.admit() == PROBE


def test_each_transition_is_announced_once() -> None:
    """Many failures while open announce one opening, not one per failure."""
    breaker, _, changes = make(consecutive=2)
    for _ in range(10):
        breaker.record(False, False)
    assert changes == [(CLOSED, OPEN)]
