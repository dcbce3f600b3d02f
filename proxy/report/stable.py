"""Stable verdicts: READY only after the match threshold has held for a while, and kept until the match
rate falls clearly below it (hysteresis). Pure: the state comes from and goes back to the store.

A route's *raw* verdict (``proxy.report.model``) is READY when every method it serves passes at the match
threshold right now. ``settle`` turns it into the verdict shown:

- not READY yet: the raw verdict must stay READY for ``ready_min_s`` seconds *and* ``ready_min_count``
  comparisons (counted from the first report or gateway check that saw it pass: ``held_since`` and
  ``held_from``); meanwhile the verdict is NOT ENOUGH DATA, saying how far along it is;
- READY (``ready_since`` set): kept while the route passes at ``match_threshold - ready_margin`` (the
  *keep* verdict), lost (the raw verdict shown) as soon as it does not.

The state lives in the store per route epoch (``DiffStore.save_state``: Redis), so every replica and
every report agree, and a new epoch starts from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from proxy.routing.table import ShadowSettings

__all__ = ["HELD_FROM", "HELD_SINCE", "READY_SINCE", "Outcome", "settle"]

HELD_SINCE: Final = "held_since"  # wall time the raw verdict was first seen READY (while not yet READY)
HELD_FROM: Final = "held_from"  # the comparisons counted then
READY_SINCE: Final = "ready_since"  # wall time READY was granted


@dataclass
class Outcome:
    """The verdict to show, its reasons, and the state to keep."""

    ready: bool
    reasons: list[str]
    state: dict[str, float] = field(default_factory=dict)


def settle(
    passes: bool, keeps: bool, compared: int, state: dict[str, float], settings: ShadowSettings, now: float
) -> Outcome:
    """The stable outcome from the raw verdict at the threshold (``passes``), at the threshold minus the
    margin (``keeps``), the comparisons counted so far, and the kept ``state``."""
    if READY_SINCE in state:
        if keeps:
            return Outcome(True, [], state)
        margin = settings.ready_margin
        return Outcome(False, [f"left READY: below {settings.match_threshold - margin:.1%} "
                              f"(match_threshold - ready_margin)"], {})  # fmt: skip
    if not passes:
        return Outcome(False, [], {})
    held_since = state.get(HELD_SINCE, now)
    held_from = state.get(HELD_FROM, float(compared))
    held_s = max(0.0, now - held_since)
    held_n = max(0, compared - int(held_from))
    if held_s >= settings.ready_min_s and held_n >= settings.ready_min_count:
        return Outcome(True, [], {READY_SINCE: now})
    why = (
        f"holding: the match threshold has held for {held_s:.0f} of {settings.ready_min_s:g} s (ready_min_s)"
        f" and {held_n} of {settings.ready_min_count} comparisons (ready_min_count)"
    )
    return Outcome(False, [why], {HELD_SINCE: held_since, HELD_FROM: held_from})
