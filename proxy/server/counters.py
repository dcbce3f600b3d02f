"""`DataPathCounters`: what the data path counts outside the per-request observer, as plain ints and dicts.

Refused connections (over ``max_connections``), gateway-made upstream errors by (upstream, kind), and
each upstream's last connect outcome (up or down, and since when). Updated only on the rare paths (a
refusal, an error answered, a new upstream connection), never per request; `proxy.ops.metrics` turns
them into Prometheus metrics and `/readyz` reports them. No I/O, no imports from above.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["DataPathCounters"]


class DataPathCounters:
    """Counters of one serving process (a worker's are summed by the supervisor from snapshots)."""

    __slots__ = ("refused_connections", "upstream_errors", "upstream_up")

    def __init__(self) -> None:
        self.refused_connections = 0
        self.upstream_errors: dict[tuple[str, str], int] = {}  # (upstream, kind) -> count
        self.upstream_up: dict[str, tuple[bool, float]] = {}  # upstream -> (up, since: unix time)

    def upstream_failed(self, upstream: str, kind: str, connecting: bool) -> None:
        """Count an error the gateway answered for ``upstream``; a failed connect also marks it down."""
        key = (upstream, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1
        if connecting:
            self._set(upstream, False)

    def upstream_connected(self, upstream: str) -> None:
        """A new connection to ``upstream`` opened: it is up (a dict lookup unless it changed)."""
        state = self.upstream_up.get(upstream)
        if state is None or not state[0]:
            self._set(upstream, True)

    def _set(self, upstream: str, up: bool) -> None:
        state = self.upstream_up.get(upstream)
        if state is None or state[0] != up:
            self.upstream_up[upstream] = (up, time.time())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (what a worker writes for the supervisor; see `merge`)."""
        return {
            "refused_connections": self.refused_connections,
            "upstream_errors": [[u, k, n] for (u, k), n in self.upstream_errors.items()],
            "upstream_up": [[u, up, since] for u, (up, since) in self.upstream_up.items()],
        }

    def merge(self, snap: dict[str, Any]) -> None:
        """Add another process's snapshot: counts summed, the most recent up/down state kept."""
        self.refused_connections += int(snap.get("refused_connections", 0))
        for upstream, kind, n in snap.get("upstream_errors", []):
            key = (str(upstream), str(kind))
            self.upstream_errors[key] = self.upstream_errors.get(key, 0) + int(n)
        for upstream, up, since in snap.get("upstream_up", []):
            have = self.upstream_up.get(upstream)
            if have is None or float(since) > have[1]:
                self.upstream_up[str(upstream)] = (bool(up), float(since))
