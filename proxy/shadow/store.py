"""Where shadow-comparison results go, as types: the ``DiffStore`` protocol, ``Sample``, ``RouteStats``,
latency buckets, and ``Recording``, the synchronous half every store shares. No I/O here.

Recording is synchronous and only touches memory (a ``Batch``); a store's ``flush()`` writes the batch
off the hot path. The real store is ``proxy.shadow.redis_pg.RedisPgStore``: counters and latency
histograms in Redis (``proxy.shadow.redis_counters``), differing samples in PostgreSQL
(``proxy.shadow.pg_samples``, table ``strangler.shadow_diffs``, the gateway's own schema in
``proxy/shadow/schema``). Latencies go into fixed logarithmic buckets (hash fields), which add up across
replicas and still give p50/p99. Distinct paths and signatures are capped per route in Redis, and
samples per route and per diff signature in PostgreSQL. A storage failure is logged and counted, never
raised.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, final

from prometheus_client import Counter as PromCounter

from proxy.compiled import mypyc_attr
from proxy.routing.table import Route

__all__ = [
    "ANY_METHOD",
    "DEFAULT_PREFIX",
    "LEARNING_COUNTED",
    "STORE_ERRORS",
    "Batch",
    "DiffStore",
    "Epoch",
    "PathCounts",
    "Recording",
    "RouteStats",
    "Sample",
    "StoreError",
    "Tally",
    "bucket_of",
    "bucket_upper",
    "describe",
    "epoch_id",
    "epoch_reason",
    "learning_counts",
    "split_key",
    "status_counter",
]

DEFAULT_PREFIX: Final = "strangler:shadow:"

STORE_ERRORS = PromCounter("strangler_shadow_store_errors", "Shadow storage writes that failed.", ["part"])

# Latency buckets: upper bound 0.1 ms * 1.15**i; 15 % resolution from 0.1 ms to about half an hour.
_BASE: Final = 1e-4
_RATIO: Final = 1.15
_LAST: Final = 120
_BUCKET_KEYS: Final = tuple(str(i) for i in range(_LAST + 1))  # Redis hash fields, made once
_BUCKETS: Final = _LAST + 1
_LAT_SIDES: Final = frozenset(("control", "candidate"))  # the sides `Tally` keeps latency buckets of


def bucket_upper(index: int) -> float:
    """The upper bound in seconds of bucket ``index``."""
    return _BASE * _RATIO**index


_UPPERS: Final = tuple(bucket_upper(i) for i in range(_LAST + 1))
_LOG_RATIO: Final = math.log(_RATIO)


def bucket_of(seconds: float) -> int:
    """The histogram bucket holding ``seconds`` (the first whose upper bound is not below it)."""
    # min(_LAST, bisect_left(_UPPERS, seconds)), computed: the logarithm gives the bucket to within one
    # (floating-point rounding), and the bounds themselves settle it. Compiled, math.log and math.ceil are
    # C calls on native floats: ~60 instructions, where a bisection over the tuple's boxed floats took ~600
    # (twice per compared GET).
    if not seconds > _BASE:  # at or below the first bound, or NaN (which no bound is below)
        return 0
    if seconds > _UPPERS[_LAST - 1]:
        return _LAST
    index = math.ceil(math.log(seconds / _BASE) / _LOG_RATIO)
    if index > 0 and _UPPERS[index - 1] >= seconds:
        index -= 1
    elif _UPPERS[index] < seconds:
        index += 1
    return index


ANY_METHOD: Final = "*"  # the method part of a route-level key (counters not tied to one method)
_SEP: Final = "|"  # never in a route name ([A-Za-z0-9._-]), an epoch id or a method


def epoch_id(fingerprint: str, generation: int) -> str:
    """The epoch of a route's configuration ``fingerprint`` after ``generation`` resets."""
    return f"{fingerprint}.{generation}"


def split_key(key: str) -> tuple[str, str, str]:
    """(route, epoch, method) of a recording key; a bare route name is its route-level key in epoch "0"."""
    parts = key.split(_SEP)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return key, "0", ANY_METHOD


def epoch_reason(before: Epoch | None, epoch: Epoch) -> str:
    """Why ``epoch`` began, from its configuration and the one of the epoch ``before`` it."""
    if epoch.config.get("reset"):
        return "reset by hand"
    if before is None:
        return "first recorded"
    fingerprint, _, generation = epoch.id.rpartition(".")
    if before.id.rpartition(".")[0] == fingerprint and before.id.rpartition(".")[2] != generation:
        return "reset by hand"  # same configuration, a later generation (whoever registered it first)
    old, new = before.config, epoch.config
    if old.get("target") != new.get("target") and old.get("target") and new.get("target"):
        return f"the flip ({old.get('target')} -> {new.get('target')})"
    changed = [k for k in ("methods", "path", "compare") if old.get(k) != new.get(k)]
    if changed:
        return "routes.yaml changed: " + ", ".join("compare rules" if k == "compare" else k for k in changed)
    return "back to an earlier configuration"


class StoreError(Exception):
    """The stores can be reached but not used as expected; the message says what to do."""


@dataclass(frozen=True)
class Sample:
    """One differing (or failed) exchange, already redacted and truncated, ready to store."""

    route: str
    signature: str
    method: str
    path: str
    primary: str
    control_status: int | None
    candidate_status: int | None
    diff: list[dict[str, Any]]
    control_body: str = ""
    candidate_body: str = ""
    control_ms: float | None = None
    candidate_ms: float | None = None
    control_error: str | None = None
    candidate_error: str | None = None
    at: float = field(default_factory=time.time)
    epoch: str = ""  # set by the store from the recording key
    request_id: str = ""  # the primary request's id (X-Request-Id as forwarded): to find it in the logs


@dataclass
class Epoch:
    """One epoch of a route: its id, when it began (wall time), why, and the configuration it counts."""

    id: str
    started: float
    reason: str = "first recorded"
    config: dict[str, Any] = field(default_factory=dict)  # target, methods, path, compare; reset: bool
    compared: int = 0  # filled for history lines
    differed: int = 0


@dataclass
class PathCounts:
    """What learning noise and generated fields needs for one route, epoch and method (see
    proxy.shadow.noise).

    ``compared``: comparisons, raced and held ones included (the learning's denominator); ``aa_pairs``:
    A/A pairs made; per normalised path: ``aa`` A/A differences, ``candidate`` control-vs-candidate
    differences, ``same_shape`` value differences where both sides had the same generated shape
    (proxy.shadow.shapes).
    """

    compared: int = 0
    aa_pairs: int = 0
    aa: dict[str, int] = field(default_factory=dict)
    candidate: dict[str, int] = field(default_factory=dict)
    same_shape: dict[str, int] = field(default_factory=dict)
    # Per path of ``same_shape``: the comparisons whose control answered with a status under which the path
    # changed with the same shape (a token of a 200 is never in a 401: its share is of the 200s).
    present: dict[str, int] = field(default_factory=dict)
    # The comparisons by the control's status: a path not (yet) in ``present`` could have shown in those of
    # the status it now changes under.
    statuses: dict[int, int] = field(default_factory=dict)

    def share(self, path: str) -> float:
        """The share of comparisons where ``path`` changed with the same generated shape (see present)."""
        return self.same_shape.get(path, 0) / max(1, self.present.get(path, self.compared))


def status_counter(status: int) -> str:
    """The counter of comparisons whose control answered ``status`` (learning's per-status denominator)."""
    name = _STATUS_COUNTERS.get(status)
    if name is None:
        name = _STATUS_COUNTERS[status] = f"n@{status}"
    return name


_STATUS_COUNTERS: dict[int, str] = {}


def learning_counts(
    counters: dict[str, int], aa: dict[str, int], cand: dict[str, int], shape: dict[str, int]
) -> PathCounts:
    """``PathCounts`` from one recording key's counters and learning hashes (``shape`` fields are
    "<control status> <path>"; any other field is not a path's: a full hash's ``(other)``, and the bare
    paths written before statuses were)."""
    compared = sum(counters.get(name, 0) for name in LEARNING_COUNTED)
    by_status = {int(k[2:]): n for k, n in counters.items() if k.startswith("n@") and k[2:].isdigit()}
    same: dict[str, int] = {}
    present: dict[str, int] = {}
    for name, n in shape.items():
        status, _, path = name.partition(" ")
        if not status.isdigit() or not path:
            continue
        same[path] = same.get(path, 0) + n
        present[path] = present.get(path, 0) + by_status.get(int(status), 0)
    return PathCounts(compared, counters.get("aa_pairs", 0), dict(aa), dict(cand), same, present, by_status)


# The counters a comparison's learning is counted in: every compared one, and the two kinds of
# comparison not "compared" (held while learning whether a path is generated, and raced).
LEARNING_COUNTED: Final = ("compared", "learning", "raced")


@dataclass
class RouteStats:
    """Everything the stores know about one route, summed over replicas."""

    route: str
    counters: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[int, int]] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)
    noise: dict[str, int] = field(default_factory=dict)
    # For learning (PathCounts): per normalised path, A/A, candidate and same-shape differences.
    aa: dict[str, int] = field(default_factory=dict)
    cand: dict[str, int] = field(default_factory=dict)
    shape: dict[str, int] = field(default_factory=dict)
    methods: dict[str, RouteStats] = field(default_factory=dict)  # per method (route-level ones apart)
    epoch: Epoch | None = None  # the epoch these counts are from
    history: list[Epoch] = field(default_factory=list)  # every kept epoch, oldest first (when asked)
    state: dict[str, float] = field(default_factory=dict)  # the stable verdict's state (see report)

    def add(self, other: RouteStats) -> None:
        """Add ``other``'s counts to these (summing methods into a route)."""
        pairs = ((self.counters, other.counters), (self.paths, other.paths), (self.noise, other.noise),
                 (self.signatures, other.signatures), (self.aa, other.aa), (self.cand, other.cand),
                 (self.shape, other.shape))  # fmt: skip
        for mine, theirs in pairs:
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for side, hist in other.latency.items():
            into = self.latency.setdefault(side, {})
            for b, v in hist.items():
                into[b] = into.get(b, 0) + v

    def get(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        return self.counters.get(name, 0)

    def path_counts(self) -> PathCounts:
        """The learning counts of these stats (one method's, to mean anything; see PathCounts)."""
        return learning_counts(self.counters, self.aa, self.cand, self.shape)

    def percentile(self, side: str, q: float) -> float | None:
        """The ``q`` quantile (0..1) of ``side``'s latency in seconds (bucket upper bound), or None."""
        hist = self.latency.get(side) or {}
        total = sum(hist.values())
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index in sorted(hist):
            seen += hist[index]
            if seen >= rank:
                return bucket_upper(index)
        return bucket_upper(max(hist))


@dataclass
class Batch:
    """Increments and samples gathered since the last flush (plain dicts: cheap to record into)."""

    # (kind, key, field) -> n. A plain dict, not a Counter: Counter defines __delitem__, so every item
    # assignment went through a Python-level __setitem__ look-up (~1,300 instructions, 7 per compared GET).
    # tuple[str, ...], not tuple[str, str, str]: mypyc keeps the latter unboxed and boxed it anew for the
    # look-up and again for the store.
    incr: dict[tuple[str, ...], int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)  # recording keys (route|epoch|method) written to

    def __bool__(self) -> bool:
        return bool(self.incr or self.samples)


def _bump(incr: dict[tuple[str, ...], int], counter: tuple[str, ...], n: int = 1) -> None:
    incr[counter] = incr.get(counter, 0) + n


class DiffStore(Protocol):
    """Recording (synchronous, in memory) and reading (async) of shadow results.

    Recording takes a *key* (``key(route, method)``, computed once per exchange): the route, its current
    epoch and the method, so every count lands in that epoch and method. ``tally`` is where the counts
    go (`Recording` keeps one); the shadow path's hot callers count into it directly.
    """

    tally: Tally

    def key(self, route: Route, method: str) -> str: ...
    def count(self, key: str, name: str, n: int = 1) -> None: ...
    def latency(self, key: str, side: str, seconds: float) -> None: ...
    def matched(
        self, key: str, control_s: float | None, candidate_s: float | None, status: int = 0
    ) -> None: ...
    def differed(self, key: str, signature: str, paths: tuple[str, ...]) -> None: ...
    def noise(self, key: str, paths: tuple[str, ...]) -> None: ...
    def sample(self, key: str, sample: Sample) -> None: ...
    def aa_pair(self, key: str, paths: tuple[str, ...]) -> None: ...
    def path_diffs(
        self, key: str, paths: tuple[str, ...], same_shape: tuple[str, ...], status: int = 0
    ) -> None: ...
    def raced(self, key: str) -> None: ...
    async def flush(self) -> None: ...
    async def stats(self, history: bool = False) -> dict[str, RouteStats]: ...
    async def samples(self, route: str, limit: int = 20, epoch: str | None = None) -> list[Sample]: ...
    async def noise_paths(self, key: str) -> set[str]: ...
    async def path_counts(self, key: str) -> PathCounts: ...
    async def save_state(self, route: str, epoch: str, state: dict[str, float]) -> None: ...
    async def reset(self, route: str) -> Epoch | None: ...
    async def close(self) -> None: ...


def describe(route: Route) -> dict[str, Any]:
    """What an epoch records of its route's configuration (the report says why an epoch began)."""
    methods = sorted(route.methods) if route.methods is not None else None
    compare = hashlib.sha256(repr(route.compare).encode()).hexdigest()[:12]
    return {"target": route.target, "methods": methods, "path": route.path, "compare": compare}


class _KeyCounts:
    """The counters and latency buckets of one recording key since the last ``take`` (see `Tally`).

    The four every compared GET bumps are native ints (compiled: an add in place, no dict item boxed and
    stored); the rest by name. So is the count of the last status matched (``status``, ``status_n``):
    a route's answers mostly share one, and it joins ``statuses`` when another comes (`all_statuses`).
    """

    __slots__ = (
        "candidate", "compared", "control", "matched", "names", "sampled", "seen", "status", "status_n",
        "statuses",
    )  # fmt: skip

    def __init__(self) -> None:
        self.seen = 0
        self.sampled = 0
        self.compared = 0
        self.matched = 0
        self.names: dict[str, int] = {}  # any other counter name -> n
        self.statuses: dict[int, int] = {}  # the control's status -> n (counter `status_counter(status)`)
        self.status = 0  # the last status counted, and its count not yet in ``statuses``
        self.status_n = 0
        self.control = [0] * _BUCKETS  # n per latency bucket (a list: an index, not a hashed key)
        self.candidate = [0] * _BUCKETS

    def add_status(self, status: int) -> None:
        """Count one comparison whose control answered ``status``."""
        if status != self.status:
            self._end_run()
            self.status = status
        self.status_n += 1

    def all_statuses(self) -> dict[int, int]:
        """The comparisons by the control's status, all of them."""
        self._end_run()
        return self.statuses

    def _end_run(self) -> None:
        # The last status's run joins ``statuses``.
        if self.status_n:
            statuses = self.statuses
            statuses[self.status] = statuses.get(self.status, 0) + self.status_n
            self.status_n = 0


@final
class Tally:
    """The counting every comparison does, in one compiled class no Python class subclasses.

    The stores are Python subclasses of `Recording`, so a compiled caller reaches their methods by name
    (mypyc's glue for interpreted subclasses): ~175 instructions of look-up and argument parsing a call.
    The shadow path calls this class instead, through ``store.tally``, as native calls. Counts are kept
    per recording key (`_KeyCounts`: the four every compared GET bumps as native ints, latency buckets in
    lists, any other counter by its name) until ``take`` folds them into a `Batch`: one tuple-keyed item
    per counter per flush, not per request.

    ``key`` names a route's current epoch and a method: the epoch is the route's configuration
    fingerprint (``Route.fingerprint``) and its reset generation (``generations``, read from the store
    by the real one); keys are cached per route, so the hot path pays two dict look-ups.
    """

    def __init__(self) -> None:
        self.generations: dict[str, int] = {}  # route -> resets by hand (strangler report --reset)
        self.described: dict[tuple[str, str], dict[str, Any]] = {}  # (route, epoch) -> its configuration
        self._keys: dict[str, tuple[str, str, dict[str, str]]] = {}  # route -> (fingerprint, epoch, keys)
        self._counts: dict[str, _KeyCounts] = {}  # recording key -> counts since the last take
        # The last answers of `key` and `_of`: a shadowed request asks for the same key twice and its counts
        # three times, and most requests are of the route before them (forgotten when keys or counts are).
        self._last_route: Route | None = None
        self._last_method = ""
        self._last_key = ""
        self._last_counts: _KeyCounts | None = None

    def key(self, route: Route, method: str) -> str:
        """The recording key of ``route``'s current epoch and ``method`` (``ANY_METHOD``: route-level)."""
        if route is self._last_route and method == self._last_method:
            return self._last_key
        entry = self._keys.get(route.name)
        if entry is None or entry[0] != route.fingerprint:
            epoch = epoch_id(route.fingerprint, self.generations.get(route.name, 0))
            entry = self._keys[route.name] = (route.fingerprint, epoch, {})
            self.described.setdefault((route.name, epoch), describe(route))
        key = entry[2].get(method)
        if key is None:
            key = entry[2][method] = f"{route.name}{_SEP}{entry[1]}{_SEP}{method}"
        self._last_route = route
        self._last_method = method
        self._last_key = key
        self._last_counts = None  # `_of` finds them again for this key
        return key

    def set_generations(self, generations: dict[str, int]) -> None:
        """Adopt the routes' reset generations (keys of a route whose generation changed are made anew)."""
        if generations != self.generations:
            self.generations = generations
            self._keys.clear()
            self._last_route = None

    def _of(self, key: str) -> _KeyCounts:
        last = self._last_counts
        if last is not None and key is self._last_key:  # `key`'s own answer: compared by identity
            return last
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = _KeyCounts()
        if key is self._last_key:
            self._last_counts = counts
        return counts

    def count(self, key: str, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` of ``key``."""
        names = self._of(key).names
        names[name] = names.get(name, 0) + n

    def seen(self, key: str) -> None:
        """One request of ``key`` met by the shadow sampler (counter ``seen``)."""
        self._of(key).seen += 1

    def sampled(self, key: str) -> None:
        """One exchange of ``key`` handed over for comparison (counter ``sampled``)."""
        self._of(key).sampled += 1

    def latency(self, key: str, side: str, seconds: float) -> None:
        """Record one latency of ``side``: "control", else "candidate" (`Recording.latency` puts any other
        side in its batch)."""
        counts = self._of(key)
        hist = counts.control if side == "control" else counts.candidate
        index = bucket_of(seconds)
        hist[index] = hist[index] + 1  # spelled out: compiled, a native add (`+=` is PyNumber_InPlaceAdd)

    def matched(
        self, key: str, control_s: float | None, candidate_s: float | None, status: int = 0
    ) -> None:
        """One comparison that matched: ``compared`` and ``matched`` counted (and the control's ``status``,
        when given, for learning), latencies recorded.

        A latency is None when it was not measured (a pipelined shadow call, see proxy.upstream.pipe).
        """
        counts = self._of(key)
        counts.compared += 1
        counts.matched += 1
        if status:
            counts.add_status(status)
        if control_s is not None:
            hist = counts.control
            index = bucket_of(control_s)
            hist[index] = hist[index] + 1  # see `latency`
        if candidate_s is not None:
            hist = counts.candidate
            index = bucket_of(candidate_s)
            hist[index] = hist[index] + 1

    def fold(self, batch: Batch) -> None:
        """Add the counts since the last fold to ``batch`` (as its ``("c" | "lat:<side>", key, field)``
        items) and start again from zero."""
        taken, self._counts = self._counts, {}
        self._last_counts = None
        incr = batch.incr
        for key, counts in taken.items():
            for name, n in (("seen", counts.seen), ("sampled", counts.sampled), ("compared", counts.compared),
                            ("matched", counts.matched)):  # fmt: skip
                if n:
                    _bump(incr, ("c", key, name), n)
            for name, n in counts.names.items():
                _bump(incr, ("c", key, name), n)
            for status, n in counts.all_statuses().items():
                _bump(incr, ("c", key, status_counter(status)), n)
            for kind, hist in (("lat:control", counts.control), ("lat:candidate", counts.candidate)):
                for index, n in enumerate(hist):
                    if n:
                        _bump(incr, (kind, key, _BUCKET_KEYS[index]), n)
            batch.routes.add(key)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; the stores subclass it in Python
class Recording:
    """The synchronous half every store shares: fill the current batch (``take`` detaches it).

    Keys and counters live in ``tally`` (a `Tally`), which the shadow path calls directly; the methods
    here that count hand over to it, so every count lands in one place.
    """

    max_pending_samples = 1000

    def __init__(self) -> None:
        self.batch = Batch()
        self.tally = Tally()

    @property
    def generations(self) -> dict[str, int]:
        """Route -> resets by hand (``strangler report --reset``), as last read from the store."""
        return self.tally.generations

    @property
    def described(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(route, epoch) -> the configuration that epoch counts (`describe`), as this process met them."""
        return self.tally.described

    def key(self, route: Route, method: str) -> str:
        """The recording key of ``route``'s current epoch and ``method`` (see `Tally.key`)."""
        return self.tally.key(route, method)

    def set_generations(self, generations: dict[str, int]) -> None:
        """Adopt the routes' reset generations (keys of a route whose generation changed are made anew)."""
        self.tally.set_generations(generations)

    def count(self, key: str, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` of ``key``."""
        self.tally.count(key, name, n)

    def latency(self, key: str, side: str, seconds: float) -> None:
        """Record one latency of ``side`` (control or candidate)."""
        if side in _LAT_SIDES:
            self.tally.latency(key, side, seconds)
            return
        _bump(self.batch.incr, (f"lat:{side}", key, _BUCKET_KEYS[bucket_of(seconds)]))
        self.batch.routes.add(key)

    def matched(
        self, key: str, control_s: float | None, candidate_s: float | None, status: int = 0
    ) -> None:
        """One comparison that matched (see `Tally.matched`)."""
        self.tally.matched(key, control_s, candidate_s, status)

    def differed(self, key: str, signature: str, paths: tuple[str, ...]) -> None:
        """Count one difference with this signature and each of its paths."""
        _bump(self.batch.incr, ("sigs", key, signature))
        for path in paths:
            _bump(self.batch.incr, ("paths", key, path))
        self.batch.routes.add(key)

    def noise(self, key: str, paths: tuple[str, ...]) -> None:
        """Count paths that differed between two control calls (A/A)."""
        for path in paths:
            _bump(self.batch.incr, ("noise", key, path))
        self.batch.routes.add(key)

    def aa_pair(self, key: str, paths: tuple[str, ...]) -> None:
        """One A/A pair made (counter ``aa_pairs``), ``paths`` differing in it."""
        incr = self.batch.incr
        _bump(incr, ("c", key, "aa_pairs"))
        for path in paths:
            _bump(incr, ("aa", key, path))
        self.batch.routes.add(key)

    def path_diffs(
        self, key: str, paths: tuple[str, ...], same_shape: tuple[str, ...], status: int = 0
    ) -> None:
        """One comparison that differed (the outcome is counted apart) where the control answered ``status``:
        each of ``paths`` differed, and those of ``same_shape`` only in value with the same generated
        shape."""
        incr = self.batch.incr
        _bump(incr, ("c", key, status_counter(status)))
        for path in paths:
            _bump(incr, ("cand", key, path))
        for path in same_shape:
            _bump(incr, ("shape", key, f"{status} {path}"))
        self.batch.routes.add(key)

    def raced(self, key: str) -> None:
        """One difference explained by data changing during the comparison (not compared)."""
        _bump(self.batch.incr, ("c", key, "raced"))
        self.batch.routes.add(key)

    def sample(self, key: str, sample: Sample) -> None:
        """Queue a sample of ``key``'s epoch for storage (the oldest pending one is dropped when storage
        lags)."""
        if len(self.batch.samples) >= self.max_pending_samples:
            self.batch.samples.pop(0)
            STORE_ERRORS.labels("samples_backlog").inc()
        epoch = split_key(key)[1]
        self.batch.samples.append(sample if sample.epoch == epoch else replace(sample, epoch=epoch))

    def take(self) -> Batch:
        """Detach and return the current batch, the tally's counts since the last take folded in."""
        batch, self.batch = self.batch, Batch()
        self.tally.fold(batch)
        return batch
