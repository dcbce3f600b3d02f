"""Noise: what differs between two calls to the control side, and how many such A/A calls to make. No I/O
of its own (``NoiseBook`` reads learned paths through the store it is given).

For an ``aa_sample`` share of reads the control is called twice; paths that differ between the two are
noise for that route, and a candidate difference only on noise paths is counted as ``noise``. A/A calls
teach noise, which a trickle teaches as well as a flood, so ``AaLimiter`` caps them per route (a token
bucket). ``NoiseBook`` caches each route's learned paths for ``NOISE_REFRESH_S``. Both read time from an
injected ``clock`` (``time.monotonic`` by default) so tests drive it instead of sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from proxy.shadow.store import DiffStore

__all__ = ["AA_PER_SECOND", "NOISE_REFRESH_S", "AaLimiter", "NoiseBook"]

log = logging.getLogger("strangler.shadow")

AA_PER_SECOND: Final = 20.0  # A/A calls per route and second at most
NOISE_REFRESH_S: Final = 5.0  # how long learned noise paths are used before they are read again

Clock = Callable[[], float]


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
    """Each route's learned noise paths, read from the store at most every ``NOISE_REFRESH_S``."""

    def __init__(self, store: DiffStore, clock: Clock = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._cached: dict[str, tuple[float, set[str]]] = {}  # route -> (when read, paths)

    def fresh(self, route: str) -> set[str] | None:
        """The cached paths of ``route`` while they are fresh (the caller may add to them), else None."""
        cached = self._cached.get(route)
        if cached is not None and self._clock() - cached[0] <= NOISE_REFRESH_S:
            return cached[1]
        return None

    async def paths(self, route: str) -> set[str]:
        """The noise paths of ``route``, read again when stale (the cached ones if reading fails)."""
        now = self._clock()
        cached = self._cached.get(route)
        if cached is None or now - cached[0] > NOISE_REFRESH_S:
            try:
                paths = await self.store.noise_paths(route)
            except Exception:
                log.warning("could not read noise paths of route %s; using the cached ones", route)
                paths = cached[1] if cached else set()
            cached = (now, paths)
            self._cached[route] = cached
        return cached[1]
