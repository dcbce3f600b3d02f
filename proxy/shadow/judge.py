"""Judging: the results of one exchange's shadow calls made into outcomes, counted and recorded. No I/O
of its own (it records into the store's in-memory batch; reading noise may wait on the store).

Legacy is always the *control* and new the *candidate*, whichever served. A ``Job`` collects its calls'
results (``settle``); when all are back, ``complete`` compares them: a byte check first
(``proxy.shadow.bytecheck.identical``), JSON only when they differ, then the A/A pair for noise
(``proxy.shadow.noise``), and for a real difference a sample (``proxy.shadow.samples``). Outcomes are
tallied in a dict and added to the Prometheus counter at each flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from prometheus_client import Counter as PromCounter

from proxy.http1.capped import Capped, digest_of
from proxy.routing.table import CompareRules
from proxy.server.exchange import Exchange, Headers
from proxy.shadow.bytecheck import identical, identity_headers
from proxy.shadow.compare import Diff, Observed, compare
from proxy.shadow.noise import NoiseBook
from proxy.shadow.samples import SampleBuilder
from proxy.shadow.store import ANY_METHOD, DiffStore
from proxy.shadow.unanswered import Unanswered

__all__ = ["CANDIDATE", "COMPARISONS", "CONTROL", "SAFE", "Failed", "Fetched", "Job", "Judge"]

log = logging.getLogger("strangler.shadow")

CONTROL: Final = "legacy"
CANDIDATE: Final = "new"
SAFE: Final = frozenset({"GET", "HEAD"})

COMPARISONS = PromCounter(
    "strangler_shadow_comparisons",
    "Shadow comparisons by route and result (matched, differed, noise, error, skipped, unavailable).",
    ["route", "result"],
)

Fetched = tuple[int, Headers, bytes, float | None]  # status, headers, body, seconds (None: not timed)
Spawn = Callable[[Coroutine[Any, Any, None], str], object]


class Failed(Exception):
    """One side of a shadow call failed: ``side`` and a short reason."""

    def __init__(self, side: str, reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


class Job:
    """One exchange in flight: the side that did not serve it, and its calls' results as they come."""

    __slots__ = ("ex", "other", "pending", "results")

    def __init__(self, ex: Exchange, other: str, pending: int) -> None:
        self.ex = ex
        self.other = other
        self.pending = pending
        self.results: dict[str, Fetched | Failed] = {}


def _observed(status: int, headers: Headers, body: bytes, cap: int, force_hash: bool) -> Observed:
    text = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    if force_hash or len(body) > cap or isinstance(body, Capped):
        # A Capped body was cut by its collector: its digest is the whole body's.
        return Observed(status, text, b"", complete=False, digest=digest_of(body))
    return Observed(status, text, body)


class Judge:
    """Settles jobs, compares their results, and records the outcomes in the store.

    ``job_done`` is called once per job that ``settle`` finishes (the admission side's slot is freed);
    ``spawn`` runs the rare comparison that must first read noise from the store; ``unanswered`` keeps
    the shadow side's failures (a new one on ``store`` by default).
    """

    def __init__(
        self, store: DiffStore, body_cap: int, noise: NoiseBook, samples: SampleBuilder,
        job_done: Callable[[], None], spawn: Spawn, unanswered: Unanswered | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.unanswered = unanswered if unanswered is not None else Unanswered(store)
        self._down = self.unanswered.down  # checked on every outcome: only a running streak costs more
        self.body_cap = body_cap
        self._noise = noise
        self._samples = samples
        self._job_done = job_done
        self._spawn = spawn
        self._tallies: dict[tuple[str, str], int] = {}
        # By id() of the rules object: CompareRules hashes field by field, which costs more than the check.
        self._names: dict[int, tuple[CompareRules, frozenset[bytes]]] = {}

    def settle(self, job: Job, key: str, res: Fetched | Failed) -> None:
        """Record one call's result; the last one completes the job."""
        job.results[key] = res
        job.pending -= 1
        if job.pending:
            return
        deferred = False
        try:
            deferred = self.complete(job)
        except Exception:
            log.exception("shadow comparison failed for route %s", job.ex.route.name)
            COMPARISONS.labels(job.ex.route.name, "error").inc()
        if not deferred:
            self._job_done()

    def complete(self, job: Job) -> bool:
        """Compare and record a job whose calls are all back; True when it finishes in a task."""
        ex = job.ex
        route = ex.route
        name = route.name
        rkey = self.store.key(route, ex.method)  # the store key: route, epoch, method
        other = job.other
        results = job.results
        raw: dict[str, Fetched] = {}
        for key, side in (("other", other), ("primary", ex.primary)):
            res = results.get(key)
            if key == "primary" and res is None:
                raw[side] = (ex.status, ex.response_headers, ex.response_body or b"", ex.latency_s)
            elif isinstance(res, Failed):
                self.record_error(ex, res)
                return False
            else:
                assert res is not None
                raw[side] = res
        cap = self.body_cap
        aa_res = results.get("aa")
        second = aa_res if isinstance(aa_res, tuple) else None  # a failed A/A call only loses the noise check
        # The second control call ran from this worker at the same moment as the candidate call, so its
        # latency is measured under the same conditions; the primary's was measured by the data path.
        control_s = second[3] if second is not None and ex.primary == CONTROL else raw[CONTROL][3]
        candidate_s = raw[CANDIDATE][3]
        rules = route.compare
        names = self.identity_names(rules)
        # A body its collector cut (Capped) is over the cap even if the cap changed since.
        capped = any(isinstance(r[2], Capped) for r in raw.values())
        if aa_res is None and not capped and identical(raw[CONTROL], raw[CANDIDATE], rules, cap, names):
            # The common case: same status, compared headers and body bytes. Nothing to parse.
            self.store.matched(rkey, control_s, candidate_s)
            self.tally(name, "matched")
            return False
        # A body over the cap (or not teed) is compared by hash, and then so is the other side's.
        force_hash = capped or ex.response_body is None or any(len(r[2]) > cap for r in raw.values())
        sides = {s: (_observed(st, h, b, cap, force_hash), lat, b) for s, (st, h, b, lat) in raw.items()}
        control, _, control_raw = sides[CONTROL]
        candidate, _, candidate_raw = sides[CANDIDATE]
        if control_s is not None:
            self.store.latency(rkey, "control", control_s)
        if candidate_s is not None:
            self.store.latency(rkey, "candidate", candidate_s)
        diff = compare(control, candidate, route.compare, cap)
        aa_paths: tuple[str, ...] = ()
        if second is not None:
            aa_obs = _observed(second[0], second[1], second[2], cap, force_hash)
            aa_diff = compare(control, aa_obs, route.compare, cap)
            if aa_diff is not None:
                self.store.noise(rkey, aa_diff.paths)
                aa_paths = aa_diff.paths
        if diff is None:
            self.store.count(rkey, "compared")
            self.store.count(rkey, "matched")
            self.tally(name, "matched")
            return False
        sample = (ex, diff, control, candidate, control_raw, candidate_raw, control_s, candidate_s)
        noise = self._noise.fresh(rkey)
        if noise is not None:
            noise.update(aa_paths)
            self._differed(name, rkey, diff, noise, sample)
            return False
        self._spawn(self._differed_later(name, rkey, diff, aa_paths, sample), "shadow-noise")
        return True

    async def _differed_later(
        self, name: str, key: str, diff: Diff, aa_paths: tuple[str, ...], sample: tuple[Any, ...]
    ) -> None:
        try:
            noise = await self._noise.paths(key)
            noise.update(aa_paths)
            self._differed(name, key, diff, noise, sample)
        except Exception:
            log.exception("shadow comparison failed for route %s", name)
            COMPARISONS.labels(name, "error").inc()
        finally:
            self._job_done()

    def _differed(self, name: str, key: str, diff: Diff, noise: set[str], sample: tuple[Any, ...]) -> None:
        self.store.count(key, "compared")
        self.store.differed(key, diff.signature, diff.paths)
        result = "noise" if all(p in noise for p in diff.paths) else "differed"
        if result == "differed" and self._samples.due(name, diff.signature):
            self.store.sample(key, self._samples.build(*sample))
        self.store.count(key, result)
        self.tally(name, result)

    def tally(self, route: str, result: str) -> None:
        """Count one outcome for the Prometheus counter (added at the next ``flush_tallies``)."""
        # A prometheus_client inc takes a lock (and, with workers, a getpid and an mmap write): tally in a
        # dict and add the sums at each flush instead.
        key = (route, result)
        self._tallies[key] = self._tallies.get(key, 0) + 1
        if self._down:  # every outcome tallied means the shadow side answered
            self.unanswered.answered(route)

    def flush_tallies(self) -> None:
        """Add the tallied outcomes to ``strangler_shadow_comparisons``."""
        tallies, self._tallies = self._tallies, {}
        for (route, result), n in tallies.items():
            COMPARISONS.labels(route, result).inc(n)

    def identity_names(self, rules: CompareRules) -> frozenset[bytes]:
        """The header names ``rules`` compare, cached per rules object."""
        entry = self._names.get(id(rules))
        if entry is None or entry[0] is not rules:
            if len(self._names) >= 1024:  # reloads make new rules objects: forget, rather than grow
                self._names.clear()
            entry = self._names[id(rules)] = (rules, identity_headers(rules))
        return entry[1]

    def record_error(self, ex: Exchange, failure: Failed) -> None:
        """Count a failed call of one side (the comparison is lost, the request was not).

        A failure of the shadow side (not the primary) goes to ``unanswered``: a metric, a warning line
        per route every few seconds, and the streak the report shows; never a line per request.
        """
        name = ex.route.name
        side = "control" if failure.side == CONTROL else "candidate"
        self.store.count(self.store.key(ex.route, ex.method), f"errors_{side}")
        COMPARISONS.labels(name, "error").inc()
        if failure.side != ex.primary:
            route_key = self.store.key(ex.route, ANY_METHOD)
            self.unanswered.failed(name, failure.side, failure.reason, route_key)
