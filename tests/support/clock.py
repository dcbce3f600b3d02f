"""A clock a test moves by hand, for the parts that take an injected clock instead of reading time.

Deadlines, latencies and rates decided by a `ManualClock` do not depend on how loaded the machine is:
the test says when time passes (``clock.advance(0.2)``) and then asserts what must have happened.

    clock = ManualClock()
    pool = PipePool(spec, loop, clock=clock)
    clock.advance(0.31)
    pool.sweep(clock())

A part that sweeps on a timer of its own shows it has looked at the new time by reading the clock again:
``seen = clock.reads; clock.advance(1); await eventually(lambda: clock.reads > seen)``.
"""

from __future__ import annotations


class ManualClock:
    """Seconds that move only when the test moves them; call it to read the time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.reads = 0  # how often it was read: a periodic sweep that reads it is seen to have run

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now
