"""The in-memory ``DiffStore`` for unit tests: the real store's recording and caps, without servers.

Integration tests use the real one (``proxy.shadow.redis_pg.RedisPgStore``); tests/shadow/test_diffstore.py
runs the same checks against both.
"""

from __future__ import annotations

from proxy.shadow.store import PathCounts, Recording, RouteStats, Sample

__all__ = ["MemoryStore"]


class MemoryStore(Recording):
    """The in-memory DiffStore for unit tests (same caps as the real one)."""

    def __init__(self, per_signature: int = 20, per_route: int = 200) -> None:
        super().__init__()
        self.per_signature = per_signature
        self.per_route = per_route
        self._stats: dict[str, RouteStats] = {}
        self._samples: list[Sample] = []

    async def flush(self) -> None:
        """Apply the pending batch."""
        batch = self.take()
        for (kind, route, name), n in batch.incr.items():
            st = self._stats.setdefault(route, RouteStats(route))
            if kind == "c":
                st.counters[name] = st.counters.get(name, 0) + n
            elif kind.startswith("lat:"):
                hist = st.latency.setdefault(kind[4:], {})
                hist[int(name)] = hist.get(int(name), 0) + n
            else:
                table: dict[str, int] = getattr(st, kind if kind != "sigs" else "signatures")
                table[name] = table.get(name, 0) + n
        for s in batch.samples:
            same = [x for x in self._samples if x.route == s.route and x.signature == s.signature]
            if len(same) >= self.per_signature:
                continue
            self._samples.append(s)
            mine = [x for x in self._samples if x.route == s.route]
            if len(mine) > self.per_route:
                self._samples.remove(min(mine, key=lambda x: x.at))

    async def stats(self) -> dict[str, RouteStats]:
        """A copy of every route's stats."""
        return {
            k: RouteStats(v.route, dict(v.counters), {s: dict(h) for s, h in v.latency.items()},
                          dict(v.paths), dict(v.signatures), dict(v.noise), dict(v.aa), dict(v.cand),
                          dict(v.shape))
            for k, v in self._stats.items()
        }

    async def samples(self, route: str, limit: int = 20) -> list[Sample]:
        """The newest samples of ``route``."""
        mine = sorted((s for s in self._samples if s.route == route), key=lambda s: s.at, reverse=True)
        return mine[:limit]

    async def noise_paths(self, route: str) -> set[str]:
        """Paths known to differ between two control calls on ``route``."""
        return set(self._stats[route].noise) if route in self._stats else set()

    async def path_counts(self, route: str, method: str) -> PathCounts:
        """What learning noise and generated fields of ``route`` and ``method`` needs (see PathCounts)."""
        return self._stats[route].path_counts(method) if route in self._stats else PathCounts()

    async def close(self) -> None:
        """Flush what is pending."""
        await self.flush()
