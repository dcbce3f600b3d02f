"""Dry runs before the primary: new's signed dry run of a sampled write, sent while the data path holds
the write (`proxy.server.holding`), so that new answers against the state legacy is about to change.

`Prewrites.ask` sends the dry run through the replayer's sender to new (a buffered `Call`: no task,
future or timer of its own; the shadower's sweep enforces its deadline, set a sweep period inside the
route's shadow timeout so the write never waits longer than that) and returns a `Prewrite` handle; the
data path's ``done()`` runs exactly once, when the dry run has answered, failed, timed out, or the
shadower closed. The handle comes back with the exchange, and the judge compares its ``result`` (see
`proxy.shadow.admission.Shadower._begin`): there is no second dry run after the fact.

What the write waited is a histogram (``strangler_shadow_prewrite_wait_seconds``, by route) and the
store's ``prewrite`` latency buckets (the report's p50/p99). A dry run that is not sent (the shadower is
closed, or as many are in flight as its concurrency) or that fails or times out is counted as
``not_compared`` with a reason (``not_compared_<busy|closed|error|timeout>``), and a failure also as
the candidate's error (``errors_candidate``, the unanswered streak).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import Histogram

from proxy.routing.table import Route
from proxy.shadow.judge import CANDIDATE, COMPARISONS, Failed, Fetched, unreached_counter
from proxy.shadow.replay import Replayer, Sent
from proxy.shadow.store import ANY_METHOD, DiffStore
from proxy.shadow.unanswered import Unanswered

__all__ = ["PREWRITE_WAIT", "Prewrite", "Prewrites"]

log = logging.getLogger("strangler.shadow")

PREWRITE_WAIT: Final = Histogram(
    "strangler_shadow_prewrite_wait_seconds",
    "How long a sampled write waited for new's dry run before it was forwarded to legacy.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class Prewrite:
    """One dry run before its primary: ``result`` once it ended (None until then)."""

    __slots__ = ("done", "key", "result", "route", "started")

    def __init__(self, route: Route, key: str, done: Callable[[], None], started: float) -> None:
        self.route = route
        self.key = key  # the store key: route, epoch, method
        self.done: Callable[[], None] | None = done
        self.started = started
        self.result: Fetched | Failed | None = None


class Prewrites:
    """The dry runs in flight before their primaries (at most ``limit``), and their accounting."""

    def __init__(self, replay: Replayer, store: DiffStore, unanswered: Unanswered, limit: int) -> None:
        self._replay = replay
        self._store = store
        self._unanswered = unanswered
        self.limit = max(1, limit)
        self.inflight: set[Prewrite] = set()
        self._clock: Callable[[], float] | None = None

    def start(self, clock: Callable[[], float]) -> None:
        """Time the waits on ``clock`` (the one the deadlines are swept on)."""
        self._clock = clock

    def ask(
        self, route: Route, method: str, path_qs: str, lines: list[bytes], body: bytes,
        host: bytes | None, done: Callable[[], None], timeout: float, sweep_s: float,
    ) -> Prewrite | None:  # fmt: skip
        """Send the dry run; None (counted) when it is not sent and the write goes on at once."""
        clock = self._clock
        if clock is None:
            self.not_compared(route, "closed")
            return None
        if len(self.inflight) >= self.limit:
            self.not_compared(route, "busy")
            return None
        pw = Prewrite(route, self._store.key(route, method), done, clock())
        self.inflight.add(pw)
        # The sweep fails a call up to one period after its deadline: start that much inside the timeout.
        limit = max(timeout - sweep_s, timeout / 2)
        if not self._replay.prewrite(method, path_qs, lines, body, host, limit, self._answered, pw):
            self.inflight.discard(pw)
            self.not_compared(route, "error")
            return None
        return pw

    def _answered(self, sent: Sent) -> None:
        pw = sent.tag
        assert isinstance(pw, Prewrite)
        result = sent.result
        if result is not None:
            status, headers, body = result
            self._end(pw, (status, headers, body, sent.latency))
        else:
            exc = sent.error
            assert exc is not None
            self._end(pw, Failed(CANDIDATE, f"{exc.kind}: {exc.message}"))

    def _end(self, pw: Prewrite, res: Fetched | Failed) -> None:
        if pw not in self.inflight:
            return
        self.inflight.discard(pw)
        pw.result = res
        name = pw.route.name
        if self._clock is not None:
            waited = max(0.0, self._clock() - pw.started)
            PREWRITE_WAIT.labels(name).observe(waited)
            self._store.latency(pw.key, "prewrite", waited)
        if isinstance(res, Failed):
            reason = res.reason.partition(":")[0]
            self.not_compared(pw.route, reason if reason in ("timeout", "closed") else "error")
            self._store.count(pw.key, unreached_counter("candidate", res.reason, True))
            self._unanswered.failed(name, CANDIDATE, res.reason, self._store.key(pw.route, ANY_METHOD))
        done, pw.done = pw.done, None
        if done is not None:
            try:  # the data path's callback forwards the write; its failure must not reach us
                done()
            except Exception:
                log.exception("prewrite callback failed for route %s", name)

    def not_compared(self, route: Route, reason: str) -> None:
        """Count a sampled write that is not compared, and why (route-level: the data path may not say
        which method)."""
        key = self._store.key(route, ANY_METHOD)
        self._store.count(key, "not_compared")
        self._store.count(key, f"not_compared_{reason}")
        COMPARISONS.labels(route.name, "not_compared").inc()

    def close(self) -> None:
        """End every dry run in flight as failed (the shadower closes): their writes go on now."""
        for pw in list(self.inflight):
            self._end(pw, Failed(CANDIDATE, "closed: the shadow stopped"))
        self._clock = None
