"""The in-memory ``DiffStore`` for unit tests: the real store's recording, epochs and caps, without servers.

Integration tests use the real one (``proxy.shadow.redis_pg.RedisPgStore``); tests/shadow/test_diffstore.py
runs the same checks against both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.shadow.store import (
    ANY_METHOD,
    Epoch,
    PathCounts,
    Recording,
    RouteStats,
    Sample,
    epoch_reason,
    split_key,
)  # fmt: skip

__all__ = ["MemoryStore"]


class MemoryStore(Recording):
    """The in-memory DiffStore for unit tests (same caps as the real one; epochs like the real one)."""

    def __init__(
        self, per_signature: int = 20, per_route: int = 200, wall: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.per_signature = per_signature
        self.per_route = per_route
        self.wall = wall
        self._stats: dict[tuple[str, str], dict[str, RouteStats]] = {}  # (route, epoch) -> method -> stats
        self._epochs: dict[str, list[Epoch]] = {}  # route -> epochs, oldest first
        self._states: dict[tuple[str, str], dict[str, float]] = {}
        self._samples: list[Sample] = []

    def _register(self, route: str, epoch: str, reset: bool = False) -> None:
        known = self._epochs.setdefault(route, [])
        if known and known[-1].id == epoch:
            return
        if any(e.id == epoch for e in known):  # back to an earlier configuration: a fresh generation
            self.set_generations({**self.generations, route: self.generations.get(route, 0) + 1})
            return
        config = dict(self.described.get((route, epoch), {}))
        if reset:
            config["reset"] = True
        new = Epoch(epoch, self.wall(), config=config)
        new.reason = epoch_reason(known[-1] if known else None, new)
        known.append(new)

    async def flush(self) -> None:
        """Apply the pending batch."""
        batch = self.take()
        for key in sorted(batch.routes):
            self._register(*split_key(key)[:2])
        for (kind, key, name), n in batch.incr.items():
            route, epoch, method = split_key(key)
            st = self._stats.setdefault((route, epoch), {}).setdefault(method, RouteStats(route))
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

    def _one(self, route: str, epoch: Epoch) -> RouteStats:
        total = RouteStats(route, epoch=epoch, state=dict(self._states.get((route, epoch.id), {})))
        for method, v in sorted(self._stats.get((route, epoch.id), {}).items()):
            copy = RouteStats(route, dict(v.counters), {s: dict(h) for s, h in v.latency.items()},
                              dict(v.paths), dict(v.signatures), dict(v.noise), dict(v.aa), dict(v.cand),
                              dict(v.shape))  # fmt: skip
            total.add(copy)
            if method != ANY_METHOD:
                total.methods[method] = copy
        return total

    async def stats(self, history: bool = False) -> dict[str, RouteStats]:
        """A copy of every route's stats in its newest epoch (with every epoch's totals with ``history``)."""
        out = {}
        for route, epochs in self._epochs.items():
            st = out[route] = self._one(route, epochs[-1])
            if history:
                for e in epochs:
                    one = self._one(route, e)
                    st.history.append(Epoch(e.id, e.started, e.reason, e.config,
                                            one.get("compared"), one.get("differed")))  # fmt: skip
        return out

    async def samples(self, route: str, limit: int = 20, epoch: str | None = None) -> list[Sample]:
        """The newest samples of ``route`` (of ``epoch`` only, when given)."""
        mine = [s for s in self._samples if s.route == route and (epoch is None or s.epoch == epoch)]
        return sorted(mine, key=lambda s: s.at, reverse=True)[:limit]

    async def noise_paths(self, key: str) -> set[str]:
        """Paths known to differ between two control calls for a recording key."""
        route, epoch, method = split_key(key)
        st = self._stats.get((route, epoch), {}).get(method)
        return set(st.noise) if st is not None else set()

    async def path_counts(self, key: str) -> PathCounts:
        """The learning counts of a recording key (see PathCounts)."""
        route, epoch, method = split_key(key)
        st = self._stats.get((route, epoch), {}).get(method)
        return st.path_counts() if st is not None else PathCounts()

    async def save_state(self, route: str, epoch: str, state: dict[str, float]) -> None:
        """Keep the stable verdict's state of ``route``'s ``epoch``."""
        self._states[(route, epoch)] = dict(state)

    async def reset(self, route: str) -> Epoch | None:
        """Start a new epoch of ``route`` by hand (None when it has none yet)."""
        known = self._epochs.get(route)
        if not known:
            return None
        gen = self.generations.get(route, 0) + 1
        self.set_generations({**self.generations, route: gen})
        epoch = f"{known[-1].id.rpartition('.')[0]}.{gen}"
        self.described[(route, epoch)] = {k: v for k, v in known[-1].config.items() if k != "reset"}
        self._register(route, epoch, reset=True)
        return self._epochs[route][-1]

    async def close(self) -> None:
        """Flush what is pending."""
        await self.flush()

