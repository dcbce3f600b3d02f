"""Noise and generated fields: what each route and method learned, by a stated test, and how many A/A
calls to make. Pure but for ``NoiseBook``, which reads the counts through the store it is given.

For an ``aa_sample`` share of reads the primary's side is called a second time, beside the other side's
call (an A/A pair: the primary's answer and that call, two calls of one side as far apart as the two
calls compared). Before a flip that side is the control; after one it is new, so an A/A pair is never
two simultaneous calls (which agree on a clock that a comparison a few milliseconds later does not).
Per route and method the store counts A/A pairs, comparisons, and per normalised path the A/A
differences, the candidate differences and the same-shape value differences
(``proxy.shadow.store.PathCounts``). From those:

- **noise** (``is_noise``): a path is noise when its A/A difference rate explains its candidate
  difference rate. Needs ``MIN_AA_PAIRS`` A/A pairs, ``MIN_COMPARED`` comparisons and ``MIN_AA_DIFFS``
  A/A differences on the path (the A/A rate is non-trivial); then a one-sided two-proportion z-test
  (pooled) of "the candidate rate is above the A/A rate": noise when z < ``Z_CRITICAL`` (2.326, one-sided
  alpha 0.01). A dozen A/A races never make a path noise on their own: the candidate must differ there
  no more often than the control does with itself. A path that changes in more than ``VOLATILE_SHARE``
  (half) of its A/A pairs (``volatile``: a one-sided z-test of its A/A rate against one half) is noise
  whatever the candidate does: it has no value stable enough to compare.
  (An uptime in milliseconds differs between any two processes, so new differs from legacy there every
  time, while two calls of one process a millisecond or less apart agree: its A/A rate is 60-95 %,
  depending on the load, and the test alone would call that a difference.)
- **generated** (``is_generated``): a path whose value differed with the same generated shape
  (``proxy.shadow.shapes``: integer, UUID, timestamp, JWT, token) in at least ``GENERATED_SHARE`` (90 %)
  of at least ``MIN_GENERATED`` (20) comparisons where it could show: those whose control answered with
  a status the path changed under (a login's token is in its 200s, not in its 401s). On reads
  (``READS``), which get A/A pairs, the control must also show it: at least ``MIN_AA_PAIRS`` A/A pairs,
  differing there in at least half of them (a read's value that is stable between two control calls and
  differs on the candidate is a real difference). Writes get no A/A pairs: there the shape rule alone
  decides, and until ``MIN_GENERATED`` comparisons were made a write's difference made only of
  same-shape generated values is held (``Learned.holds``; per path, counting the comparisons where it
  could show).

A race re-read (``proxy.shadow.judge``) counts as an A/A pair too: the primary and its re-read are two
calls of one side (the control's, or after a flip new's), so a path that changes between any two calls
(a clock, a counter) is learned as noise rather than raced for ever. A/A calls teach noise, which a
trickle teaches as well as a flood, so ``AaLimiter`` caps them per route (a token bucket; the race
re-reads use one too). ``NoiseBook`` caches each route and method's learning for ``NOISE_REFRESH_S``.
Both read time from an injected ``clock`` (``time.monotonic`` by default) so tests drive it instead of
sleeping.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.shadow.store import DiffStore, PathCounts, RouteStats, split_key

__all__ = [
    "AA_PER_SECOND", "GENERATED_SHARE", "MIN_AA_DIFFS", "MIN_AA_PAIRS", "MIN_COMPARED", "MIN_GENERATED",
    "NOISE_REFRESH_S", "READS", "REREAD_PER_SECOND", "VOLATILE_SHARE", "Z_CRITICAL", "AaLimiter", "Countdown",
    "Learned",
    "LearnedRows",
    "NoiseBook", "is_generated", "is_noise", "learned_from", "learned_rows", "volatile",
]  # fmt: skip

log = logging.getLogger("strangler.shadow")

AA_PER_SECOND: Final = 20.0  # A/A calls per route and second at most
REREAD_PER_SECOND: Final = 20.0  # race re-reads per route and second at most
NOISE_REFRESH_S: Final = 5.0  # how long learned noise paths are used before they are read again
MIN_AA_PAIRS: Final = 20
MIN_COMPARED: Final = 20
MIN_AA_DIFFS: Final = 3
Z_CRITICAL: Final = 2.326  # one-sided, alpha = 0.01
VOLATILE_SHARE: Final = 0.5  # a path that changes in this share of its A/A pairs has no stable value
MIN_GENERATED: Final = 20
GENERATED_SHARE: Final = 0.9
READS: Final = frozenset({"GET", "HEAD"})  # the methods with A/A pairs (and race re-reads)

Clock = Callable[[], float]


def is_noise(aa_pairs: int, aa_diffs: int, compared: int, candidate_diffs: int) -> bool:
    """Whether a path's A/A difference rate explains its candidate difference rate (see the module)."""
    if aa_pairs < MIN_AA_PAIRS or compared < MIN_COMPARED or aa_diffs < MIN_AA_DIFFS:
        return False
    p_aa = aa_diffs / aa_pairs
    p_c = candidate_diffs / compared
    if p_c <= p_aa or volatile(aa_pairs, aa_diffs):
        return True
    pooled = (aa_diffs + candidate_diffs) / (aa_pairs + compared)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / aa_pairs + 1.0 / compared))
    return se > 0 and (p_c - p_aa) / se < Z_CRITICAL


def volatile(aa_pairs: int, aa_diffs: int) -> bool:
    """Whether a path changes in more than ``VOLATILE_SHARE`` of its A/A pairs, significantly: a one-sided
    z-test of its A/A rate against that share (z >= ``Z_CRITICAL``), so that a dozen races among the first
    twenty pairs do not make a path volatile, while an uptime (60-95 % of hundreds of pairs) is."""
    if aa_pairs <= 0:
        return False
    se = math.sqrt(VOLATILE_SHARE * (1.0 - VOLATILE_SHARE) / aa_pairs)
    return (aa_diffs / aa_pairs - VOLATILE_SHARE) / se >= Z_CRITICAL


def is_generated(compared: int, same_shape: int, aa_pairs: int, aa_diffs: int, read: bool = False) -> bool:
    """Whether a path's values are generated per call (see the module); ``read``: a method with A/A pairs.
    ``compared``: the comparisons where the path could show (those answered with a status it changed
    under; ``PathCounts.present``)."""
    if compared < MIN_GENERATED or same_shape < GENERATED_SHARE * compared:
        return False
    if read:
        return aa_pairs >= MIN_AA_PAIRS and aa_diffs * 2 >= aa_pairs
    return not (aa_pairs >= MIN_AA_PAIRS and aa_diffs * 2 < aa_pairs)


@dataclass(frozen=True)
class Learned:
    """One route and method's learning: its noise and generated paths (normalised), and the counts."""

    noise: frozenset[str] = frozenset()
    generated: frozenset[str] = frozenset()
    counts: PathCounts = field(default_factory=PathCounts)
    read: bool = False

    def holds(self, paths: tuple[str, ...], status: int) -> bool:
        """Whether a difference made only of same-shape generated values on ``paths``, under a control that
        answered ``status``, is held (neither matched nor differed): on a write, until each of those paths
        has MIN_GENERATED comparisons where it could show (``PathCounts.present``: a login's tokens show in
        its 200s, not in its 401s), which tell whether it is generated. For a path never seen changing,
        the comparisons answered ``status`` stand in for those (an estimate: a status whose bodies vary in
        shape may not have shown it in all of them). Counting all comparisons instead judged a
        login's first tokens as differences whenever a third of its answers were 401s, or its first twenty
        were."""
        if self.read:
            return False
        counts = self.counts
        present = counts.present
        seen = counts.statuses.get(status, 0)
        return any(present.get(p, seen) < MIN_GENERATED for p in paths)


def learned_from(counts: PathCounts, method: str = "GET") -> Learned:
    """The noise and generated paths the counts of ``method`` show (a generated path is never noise: it is
    compared by shape, so a shape difference there stays a difference)."""
    read = method in READS
    generated = frozenset(
        p for p, n in counts.same_shape.items()
        if is_generated(counts.present.get(p, counts.compared), n, counts.aa_pairs, counts.aa.get(p, 0), read)
    )  # fmt: skip
    noise = frozenset(
        p for p, n in counts.aa.items()
        if p not in generated and is_noise(counts.aa_pairs, n, counts.compared, counts.candidate.get(p, 0))
    )  # fmt: skip
    return Learned(noise, generated, counts, read)


class Countdown:
    """Independent draws that each hit with probability ``share``, made as a countdown: the gap to the next
    hit is drawn (geometric, from one ``rand()`` in [0, 1)) when the last one hits, instead of a random
    number every draw. The same sequence of hits in distribution; one random number a hit, not a draw (the
    A/A choice is made for every compared read, and ``random.random`` called ~300 instructions of it).

    ``share`` 1 hits every time and 0 (or below 1e-16) never; a ``share`` that changes (a reload) draws a
    new gap.
    """

    __slots__ = ("_left", "_log_miss", "_rand", "_share")

    def __init__(self, rand: Callable[[], float]) -> None:
        self._rand = rand
        self._share = math.nan  # no gap drawn yet: equal to no share, so the first draw draws one
        self._log_miss = 0.0  # log(1 - share): 0.0 when a draw never misses or never hits
        self._left = 0

    def hit(self, share: float) -> bool:
        """One draw: True with probability ``share``."""
        if share != self._share:
            self._share = share
            self._log_miss = math.log(1.0 - share) if 0.0 < share < 1.0 else 0.0
            self._left = self._gap(share)
        left = self._left - 1
        if left > 0:
            self._left = left
            return False
        self._left = self._gap(share)
        return True

    def _gap(self, share: float) -> int:
        # P(gap = k) = (1 - share)^(k-1) * share: the draws up to and including the next hit. (math.log, not
        # log1p: compiled, it is a C call on a native float; log1p is looked up by name.)
        if share >= 1.0:
            return 1
        log_miss = self._log_miss
        if log_miss == 0.0:  # 0, NaN, or a share too small to tell from 0 in 1 - share: never
            return _NEVER
        u = min(self._rand(), _BELOW_ONE)
        misses = math.log(1.0 - u) / log_miss  # >= 0
        return 1 + int(misses) if misses < _NEVER else _NEVER


_NEVER: Final = 1 << 62  # a gap no process reaches
_BELOW_ONE: Final = 1.0 - 2.0**-53  # the largest float below 1 (a rand() that returned 1.0)


class AaLimiter:
    """A token bucket per route: at most ``rate`` A/A calls a second, in bursts of as many."""

    def __init__(self, rate: float = AA_PER_SECOND, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # route -> (tokens, when counted)

    def due(self, route: str) -> bool:
        """Whether ``route`` may make an A/A call now (takes a token when it may)."""
        # At high traffic the second control call would otherwise cost as much as the shadowing itself.
        now = self._clock()
        rate = self.rate
        tokens, last = self._tokens.get(route, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._tokens[route] = (tokens, now)
            return False
        self._tokens[route] = (tokens - 1.0, now)
        return True


class NoiseBook:
    """Each route and method's learning, read from the store at most every ``NOISE_REFRESH_S``."""

    def __init__(self, store: DiffStore, clock: Clock = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        # By recording key (route, epoch, method): a new epoch learns from nothing.
        self._cached: dict[str, tuple[float, Learned]] = {}  # key -> (when read, learned)

    def fresh(self, key: str) -> Learned | None:
        """The cached learning of a recording key while it is fresh, else None."""
        cached = self._cached.get(key)
        if cached is not None and self._clock() - cached[0] <= NOISE_REFRESH_S:
            return cached[1]
        return None

    async def learned(self, key: str) -> Learned:
        """The learning of a recording key, read again when stale (the cached one if reading fails)."""
        now = self._clock()
        cached = self._cached.get(key)
        if cached is None or now - cached[0] > NOISE_REFRESH_S:
            route, _, method = split_key(key)
            try:
                learned = learned_from(await self.store.path_counts(key), method)
            except Exception:
                log.warning("could not read the learned noise of route %s; using the cached one", route)
                learned = cached[1] if cached else Learned()
            if len(self._cached) >= 4096:  # epochs make new keys: forget, rather than grow
                self._cached.clear()
            cached = (now, learned)
            self._cached[key] = cached
        return cached[1]


@dataclass(frozen=True)
class LearnedRows:
    """A route's learning for the report: noise and generated paths, with their rates, over its methods."""

    noise: frozenset[str]  # noise paths of any method
    # method, path, aa_rate, candidate_rate, aa_pairs, aa_diffs, compared
    noise_rows: tuple[dict[str, Any], ...]
    generated_rows: tuple[dict[str, Any], ...]  # method, path, rate, compared, learned (or configured)


def learned_rows(stats: RouteStats, configured: tuple[str, ...] = ()) -> LearnedRows:
    """What ``stats`` taught per method (``learned_from``), as report rows; ``configured`` are the route's
    ``compare.generated`` paths, shown with their same-shape rate when there is one."""
    noise: set[str] = set()
    noise_rows: list[dict[str, Any]] = []
    gen_rows: list[dict[str, Any]] = []
    for method, per_method in sorted(stats.methods.items()):
        counts = per_method.path_counts()
        learned = learned_from(counts, method)
        noise |= learned.noise
        for path in sorted(learned.noise):
            noise_rows.append({
                "method": method, "path": path, "aa_rate": counts.aa.get(path, 0) / counts.aa_pairs,
                "candidate_rate": counts.candidate.get(path, 0) / counts.compared,
                "aa_pairs": counts.aa_pairs, "aa_diffs": counts.aa.get(path, 0), "compared": counts.compared,
            })  # fmt: skip
        for path in sorted(learned.generated | {p for p in counts.same_shape if p in configured}):
            rate = counts.share(path)
            gen_rows.append({
                "method": method, "path": path, "rate": rate,
                "compared": counts.present.get(path, counts.compared), "learned": path in learned.generated,
            })  # fmt: skip
    return LearnedRows(frozenset(noise), tuple(noise_rows), tuple(gen_rows))
