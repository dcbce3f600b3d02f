"""Judging: the results of one exchange's shadow calls made into outcomes, counted and recorded. No I/O of
its own (it records into the store's in-memory batch; reading noise may wait on the store).

Legacy is always the *control* and new the *candidate*, whichever served. A ``Job`` collects its calls'
results (``settle``); when all are back, ``complete`` compares them: a byte check first
(``proxy.shadow.bytecheck.identical``), JSON only when they differ, then the A/A pair (counted for
learning). A difference is then judged with what the route and method learned (``proxy.shadow.noise``):
same-shape value changes on generated paths (learned, or ``compare.generated``; ``proxy.shadow.shapes``)
are no difference (outcome ``matched``, counter ``generated``); on a write, while fewer than
``MIN_GENERATED`` comparisons were made, a difference only of same-shape generated values is held
(``learning``: neither matched nor differed); a difference only on noise paths is ``noise``. What is left
on a read is checked for a race: the primary side is read again once (same request headers, through the
replayer, at most ``REREAD_PER_SECOND`` per route); when that answer differs from the primary's on every
path where the candidate differed, the data changed during the comparison (``raced``: not compared, not
counted against the candidate). Otherwise ``differed``, with a sample (``proxy.shadow.samples``). Outcomes
are tallied in a dict and added to the Prometheus counter at each flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from prometheus_client import Counter as PromCounter

from proxy.http1.capped import Capped, digest_of
from proxy.routing.table import CompareRules
from proxy.server.exchange import Exchange, Headers
from proxy.shadow.bytecheck import identical, identity_headers, name_lengths
from proxy.shadow.compare import Diff, Observed, compare
from proxy.shadow.noise import REREAD_PER_SECOND, AaLimiter, Learned, NoiseBook
from proxy.shadow.samples import SampleBuilder
from proxy.shadow.shapes import on_generated, same_shapes, without
from proxy.shadow.store import ANY_METHOD, DiffStore
from proxy.shadow.unanswered import Unanswered, error_kind

__all__ = [
    "CANDIDATE", "COMPARISONS", "CONTROL", "SAFE", "Failed", "Fetched", "Job", "Judge", "unreached_counter",
]  # fmt: skip

log = logging.getLogger("strangler.shadow")

CONTROL: Final = "legacy"
CANDIDATE: Final = "new"
SAFE: Final = frozenset({"GET", "HEAD"})

COMPARISONS = PromCounter(
    "strangler_shadow_comparisons",
    "Shadow comparisons by route and result (matched, differed, noise, raced, learning, error, skipped,"
    " unavailable).",
    ["route", "result"],
)

Fetched = tuple[int, Headers, bytes, float | None]  # status, headers, body, seconds (None: not timed)
Spawn = Callable[[Coroutine[Any, Any, None], str], object]
Call = Callable[["Job", str, str, float], None]  # job, result key, side, time limit (Replayer.call)


class Failed(Exception):
    """One side of a shadow call failed: ``side`` and a short reason."""

    def __init__(self, side: str, reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


class Job:
    """One exchange in flight: the side that did not serve it, and its calls' results as they come."""

    __slots__ = ("case", "ex", "other", "pending", "results")

    def __init__(self, ex: Exchange, other: str, pending: int) -> None:
        self.ex = ex
        self.other = other
        self.pending = pending
        self.results: dict[str, Fetched | Failed] = {}
        self.case: _Case | None = None  # set while the race re-read is out


class _Outcomes:
    """One route's outcomes since the last flush: ``matched`` (nearly all of them) a native int."""

    __slots__ = ("matched", "others")

    def __init__(self) -> None:
        self.matched = 0
        self.others: dict[str, int] = {}  # any other result -> n


class _Case:
    """A difference being judged: what its outcome needs once learning (and a re-read) are in."""

    __slots__ = ("diff", "gen", "key", "method", "name", "primary", "rest", "sample", "status")

    def __init__(
        self, name: str, key: str, method: str, diff: Diff, primary: Fetched, sample: tuple[Any, ...]
    ) -> None:
        self.name = name
        self.key = key  # the store key: route, epoch, method
        self.method = method
        self.diff = diff
        self.primary = primary
        self.status = 0  # the control's status (learning counts generated values per status)
        self.sample = sample
        self.gen: tuple[str, ...] = ()  # normalised paths that changed only in value, with a generated shape
        self.rest: Diff | None = diff  # the differences left once generated values are compared by shape


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
        self._tallies: dict[str, _Outcomes] = {}  # route -> its outcomes since the last flush
        self._last_route = ""  # `_outcomes`' last answer: most outcomes are of the route before them
        self._last_outcomes: _Outcomes | None = None
        self._reread: Call | None = None
        self._reread_due: Callable[[str], bool] = lambda route: False
        self.reread_timeout = 5.0
        # By id() of the rules object: CompareRules hashes field by field, which costs more than the check.
        self._names: dict[int, tuple[CompareRules, frozenset[bytes], int, tuple[bytes, ...]]] = {}
        self._last: tuple[CompareRules, frozenset[bytes], int, tuple[bytes, ...]] | None = None  # `_entry`'s

    def enable_rereads(
        self, call: Call, timeout: float, clock: Callable[[], float], rate: float = REREAD_PER_SECOND
    ) -> None:
        """Re-read the primary side of a differing read through ``call`` (``Replayer.call``), at most
        ``rate`` a second per route; ``timeout`` when the route has no shadow timeout of its own."""
        self._reread = call
        self._reread_due = AaLimiter(rate, clock).due
        self.reread_timeout = timeout

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
        if job.case is not None:
            self._reread_back(job, job.case)
            return False
        ex = job.ex
        route = ex.route
        name = route.name
        rkey = self.store.key(route, ex.method)  # the store key: route, current epoch, method
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
        # The A/A call went to the primary's side beside the other side's call, so when the primary is the
        # control its latency is measured under the same conditions as the candidate's (the primary's was
        # measured by the data path).
        control_s = second[3] if second is not None and ex.primary == CONTROL else raw[CONTROL][3]
        candidate_s = raw[CANDIDATE][3]
        rules = route.compare
        names = self.identity_names(rules)
        # A body its collector cut (Capped) is over the cap even if the cap changed since.
        capped = any(isinstance(r[2], Capped) for r in raw.values())
        if aa_res is None and not capped and identical(raw[CONTROL], raw[CANDIDATE], rules, cap, names):
            # The common case: same status, compared headers and body bytes. Nothing to parse.
            self.store.tally.matched(rkey, control_s, candidate_s, raw[CONTROL][0])
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
        method = ex.method
        if second is not None:
            aa_obs = _observed(second[0], second[1], second[2], cap, force_hash)
            aa_diff = compare(sides[ex.primary][0], aa_obs, route.compare, cap)
            self.store.aa_pair(rkey, aa_diff.paths if aa_diff is not None else ())
        if diff is None:
            self.store.matched(rkey, None, None, raw[CONTROL][0])
            self.tally(name, "matched")
            return False
        sample = (ex, diff, control, candidate, control_raw, candidate_raw, control_s, candidate_s)
        case = _Case(name, rkey, method, diff, raw[ex.primary], sample)
        case.status = control.status
        learned = self._noise.fresh(rkey)
        if learned is not None:
            return self._judge(job, case, learned)
        self._spawn(self._judge_later(job, case), "shadow-noise")
        return True

    async def _judge_later(self, job: Job, case: _Case) -> None:
        deferred = False
        try:
            learned = await self._noise.learned(case.key)
            deferred = self._judge(job, case, learned)
        except Exception:
            log.exception("shadow comparison failed for route %s", case.name)
            COMPARISONS.labels(case.name, "error").inc()
        finally:
            if not deferred:
                self._job_done()

    def _judge(self, job: Job, case: _Case, learned: Learned) -> bool:
        """Judge a difference with what was learned; True when a race re-read went out (see the module)."""
        name, diff = case.name, case.diff
        rules = job.ex.route.compare
        same, gen = same_shapes(diff)
        case.gen = tuple(sorted(gen))
        learned_gen = learned.generated
        by_shape = frozenset(p for p in same if (p in learned_gen and p in gen) or on_generated(p, rules))
        rest = case.rest = without(diff, by_shape) if by_shape else diff
        if rest is None:
            self._learn(case)
            key = case.key
            self.store.count(key, "compared")
            self.store.count(key, "matched")
            self.store.count(key, "generated")
            self.tally(name, "matched")
            return False
        if all(p in gen for p in rest.paths) and learned.holds(rest.paths, case.status):
            self._learn(case)  # maybe generated: not known before MIN_GENERATED comparisons
            self.store.count(case.key, "learning")
            self.tally(name, "learning")
            return False
        if all(p in learned.noise for p in rest.paths):
            self._outcome(case, rest, "noise")
            return False
        ex = job.ex
        if self._reread is not None and case.method in SAFE and self._reread_due(name):
            spec = ex.route.shadow
            limit = spec.timeout if spec is not None and spec.timeout > 0 else self.reread_timeout
            job.case = case
            job.pending = 1
            self._reread(job, "reread", ex.primary, limit)
            return True
        self._outcome(case, rest, "differed")
        return False

    def _reread_back(self, job: Job, case: _Case) -> None:
        """The primary side read again: a race when it changed where the candidate differed."""
        res = job.results.get("reread")
        rest = case.rest
        assert rest is not None
        if not isinstance(res, tuple):
            self._outcome(case, rest, "differed")  # no answer: counted as without a re-read
            return
        moved = _moved(case.primary, res, job.ex.route.compare, self.body_cap)
        # The primary and its re-read are two calls of one side: a same-side pair like an A/A pair (after a
        # flip, of new), so a path that changes between any two calls (a clock, a counter) is learned as
        # noise, not raced for ever.
        self.store.aa_pair(case.key, moved)
        if moved and set(rest.paths) <= set(moved):
            # Learning counts it all the same: A/A pairs race too, so the rates stay comparable.
            self._learn(case)
            self.store.raced(case.key)
            self.tally(case.name, "raced")
            return
        self._outcome(case, rest, "differed")  # no change where the candidate differed

    def _learn(self, case: _Case) -> None:
        self.store.path_diffs(case.key, case.diff.paths, case.gen, case.status)

    def _outcome(self, case: _Case, rest: Diff, result: str) -> None:
        name, key = case.name, case.key
        self._learn(case)
        self.store.count(key, "compared")
        self.store.differed(key, rest.signature, rest.paths)
        if result == "differed" and self._samples.due(name, rest.signature):
            ex, _, *rest_of_sample = case.sample
            self.store.sample(key, self._samples.build(ex, rest, *rest_of_sample))
        self.store.count(key, result)
        self.tally(name, result)

    def tally(self, route: str, result: str) -> None:
        """Count one outcome for the Prometheus counter (added at the next ``flush_tallies``)."""
        # A prometheus_client inc takes a lock (and, with workers, a getpid and an mmap write): tally in
        # memory and add the sums at each flush instead.
        if result == "matched":
            self.matched(route)
            return
        others = self._outcomes(route).others
        others[result] = others.get(result, 0) + 1
        if self._down:  # every outcome tallied means the shadow side answered
            self.unanswered.answered(route)

    def matched(self, route: str) -> None:
        """`tally` of a matched comparison (the common outcome: a native add)."""
        self._outcomes(route).matched += 1
        if self._down:
            self.unanswered.answered(route)

    def _outcomes(self, route: str) -> _Outcomes:
        last = self._last_outcomes
        if last is not None and route is self._last_route:  # route names are the table's own strs
            return last
        outcomes = self._tallies.get(route)
        if outcomes is None:
            outcomes = self._tallies[route] = _Outcomes()
        self._last_route = route
        self._last_outcomes = outcomes
        return outcomes

    def flush_tallies(self) -> None:
        """Add the tallied outcomes to ``strangler_shadow_comparisons``."""
        tallies, self._tallies = self._tallies, {}
        self._last_outcomes = None
        for route, outcomes in tallies.items():
            if outcomes.matched:
                COMPARISONS.labels(route, "matched").inc(outcomes.matched)
            for result, n in outcomes.others.items():
                COMPARISONS.labels(route, result).inc(n)

    def identity_names(self, rules: CompareRules) -> frozenset[bytes]:
        """The header names ``rules`` compare, cached per rules object."""
        return self.identity(rules)[0]

    def identity(self, rules: CompareRules) -> tuple[frozenset[bytes], int]:
        """The header names ``rules`` compare and the mask of their lengths (`name_lengths`), cached per
        rules object."""
        entry = self._entry(rules)
        return entry[1], entry[2]

    def compared_names(self, rules: CompareRules) -> tuple[bytes, ...]:
        """The header names ``rules`` compare as a tuple (sorted), cached per rules object."""
        return self._entry(rules)[3]

    def _entry(self, rules: CompareRules) -> tuple[CompareRules, frozenset[bytes], int, tuple[bytes, ...]]:
        # The last entry is kept apart: a run of one route's comparisons compares its rules by identity,
        # without boxing an id and looking it up.
        entry = self._last
        if entry is not None and entry[0] is rules:
            return entry
        entry = self._names.get(id(rules))
        if entry is None or entry[0] is not rules:
            if len(self._names) >= 1024:  # reloads make new rules objects: forget, rather than grow
                self._names.clear()
            names = identity_headers(rules)
            entry = self._names[id(rules)] = (rules, names, name_lengths(names), tuple(sorted(names)))
        self._last = entry
        return entry

    def record_error(self, ex: Exchange, failure: Failed) -> None:
        """Count a failed call of one side (the comparison is lost, the request was not).

        A failure of the shadow side (not the primary) goes to ``unanswered``: a metric, a warning line
        per route every few seconds, and the streak the report shows; never a line per request. A shadow
        side that refused the connection is counted ``unreached_<side>``, not ``errors_<side>``: it was
        down, not wrong (see ``unreached_counter``).
        """
        name = ex.route.name
        side = "control" if failure.side == CONTROL else "candidate"
        shadow = failure.side != ex.primary
        self.store.count(self.store.key(ex.route, ex.method), unreached_counter(side, failure.reason, shadow))
        COMPARISONS.labels(name, "error").inc()
        if shadow:
            route_key = self.store.key(ex.route, ANY_METHOD)
            self.unanswered.failed(name, failure.side, failure.reason, route_key)


def unreached_counter(side: str, reason: str, shadow: bool) -> str:
    """The store counter of a failed call of ``side`` (control or candidate): ``unreached_<side>`` when it
    was the shadow side and it refused the connection (nothing reached it), else ``errors_<side>``.

    The report's verdict says NOT READY while new failed more calls than legacy in the epoch, for good:
    an answer that is an error is evidence about new. A shadow side that is down answers nothing, which
    is not evidence about its answers; while it lasts the unanswered streak makes the verdict COMPARISON
    UNAVAILABLE, and once it is back the comparisons decide again. Counted as errors, one outage would keep
    the route NOT READY for the rest of its epoch, so the autopilot could never promote it again after
    new returned (the served-traffic rollback triggers are what judge new's availability)."""
    if shadow and error_kind(reason) == "connect":
        return f"unreached_{side}"
    return f"errors_{side}"


def _moved(primary: Fetched, again: Fetched, rules: CompareRules, cap: int) -> tuple[str, ...]:
    """The paths where the re-read answer differs from the primary's (a byte check first, then the JSON
    comparison); the difference is a race when they cover every path where the candidate differed."""
    if primary[0] == again[0] and bytes(primary[2]) == bytes(again[2]):
        return ()
    first = _observed(primary[0], primary[1], primary[2], cap, False)
    second = _observed(again[0], again[1], again[2], cap, False)
    moved = compare(first, second, rules, cap)
    return () if moved is None else moved.paths
