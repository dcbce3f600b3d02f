"""Shadowing: copy a sample of requests to the backend that did not serve them, compare, record.

The data path calls ``wants(route, method)`` when a request starts and ``submit(exchange)`` after the
client has its response; both are synchronous and cheap (a random draw, a bounded-queue put). When the
queue is full the exchange is dropped and counted. At most ``concurrency`` exchanges are replayed at
once, on pools of their own, as callbacks (`proxy.shadowcall.Call`: no task, future or timer per call;
one sweep every SWEEP_S enforces the deadlines), so a slow or hanging shadow backend never reaches the
client. When both sides sent the same status, compared headers and body bytes, the comparison is a
byte check (`proxy.compare.identical`); JSON is parsed only when they differ.

Legacy is always the *control* and new the *candidate*, whichever served. Reads (GET/HEAD) are shadowed
by default; a write only when the route says ``writes: true``, and then only to new, signed as a dry run
(legacy has no dry run: such a write is counted as skipped). For an ``aa_sample`` share of reads the
control is called twice: paths that differ between two control calls are noise for that route. A/A
calls are capped at ``aa_rate`` a second per route: noise is learned from a trickle as well as from a
flood, and at high traffic the second call would otherwise cost as much as the shadowing itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Final, Protocol

import orjson
from prometheus_client import Counter as PromCounter

from proxy.http1.errors import UpstreamError
from proxy.routing.table import CompareRules, Route, RouteTable, ShadowSettings
from proxy.server.exchange import Exchange, Headers
from proxy.shadow import dryrun
from proxy.shadow.compare import (
    Diff,
    Observed,
    compare,
    decode_body,
    identical,
    identity_headers,
    same_headers,
)
from proxy.shadow.redact import Redactor
from proxy.shadow.store import DEFAULT_PREFIX, DiffStore, RedisPgStore, Sample
from proxy.upstream.call import Call, build_request
from proxy.upstream.pipe import PipeCall, PipePool
from proxy.upstream.pool import UpstreamPool

__all__ = ["CANDIDATE", "COMPARISONS", "CONTROL", "DROPS", "Fetcher", "Shadower", "open_sink"]

log = logging.getLogger("strangler.shadow")

CONTROL: Final = "legacy"
CANDIDATE: Final = "new"
SAFE: Final = frozenset({"GET", "HEAD"})
STORED_BODY_CHARS: Final = 4096
STORED_VALUE_CHARS: Final = 512
STORED_DIFFERENCES: Final = 50
NOISE_REFRESH_S: Final = 5.0
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
SAMPLE_INTERVAL_S: Final = 5.0
AA_PER_SECOND: Final = 20.0  # A/A calls per route and second at most (see Shadower._aa_due)
SWEEP_S: Final = 0.1  # precision of the shadow calls' deadlines

COMPARISONS = PromCounter(
    "strangler_shadow_comparisons",
    "Shadow comparisons by route and result (matched, differed, noise, error, skipped).",
    ["route", "result"],
)
DROPS = PromCounter(
    "strangler_shadow_dropped", "Shadow exchanges dropped because the queue was full.", ["route"]
)

# Request headers never replayed: the pool sets framing itself, and a client must not smuggle a dry run.
_DROP_HEADERS: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade",
     b"te", b"trailer", b"proxy-connection", b"x-strangler-dry-run"}
)  # fmt: skip


class Fetcher(Protocol):
    """The buffered call of ``proxy.upstream.UpstreamPool``."""

    # The timeout parameter mirrors UpstreamPool.fetch, whose one deadline also covers its retry.
    async def fetch(
        self, method: str, path_qs: str, headers: Headers, body: bytes, timeout: float  # noqa: ASYNC109
    ) -> tuple[int, Headers, bytes]: ...


Fetched = tuple[int, Headers, bytes, float | None]  # status, headers, body, seconds (None: not timed)


class _Failed(Exception):
    """One side of a shadow call failed: ``side`` and a short reason."""

    def __init__(self, side: str, reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


def _replayed(ex: Exchange) -> Headers:
    """The request headers a shadow call sends: the forwarded ones less `_DROP_HEADERS`."""
    return [(k, v) for k, v in ex.request_headers if k.lower() not in _DROP_HEADERS]


def _observed(status: int, headers: Headers, body: bytes, cap: int, force_hash: bool) -> Observed:
    text = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    if force_hash or len(body) > cap:
        return Observed(status, text, b"", complete=False, digest=hashlib.sha256(body).hexdigest())
    return Observed(status, text, body)


class _Job:
    """One exchange in flight: the side that did not serve it, and its calls' results as they come."""

    __slots__ = ("ex", "other", "pending", "results")

    def __init__(self, ex: Exchange, other: str, pending: int) -> None:
        self.ex = ex
        self.other = other
        self.pending = pending
        self.results: dict[str, Fetched | _Failed] = {}


class Shadower:
    """The ``ShadowSink`` of the gateway: sampling, a bounded queue, workers, comparison, recording."""

    def __init__(
        self,
        settings: ShadowSettings,
        pools: Mapping[str, Fetcher],
        store: DiffStore,
        *,
        secret: bytes | None = None,
        rand: Callable[[], float] = random.random,
        flush_interval: float = 0.5,
        aa_rate: float = AA_PER_SECOND,
    ) -> None:
        self.settings = settings
        self.body_cap = settings.body_cap  # bytes of each body the data path tees for comparison
        self.pools = pools
        self.store = store
        self.secret = secret
        self.redactor = Redactor(settings.redact)
        self._rand = rand
        self._flush_interval = flush_interval
        self._maxsize = settings.queue
        self._concurrency = max(1, settings.concurrency)
        self._waiting: collections.deque[Exchange] = collections.deque()
        self._running = 0  # exchanges in flight (at most concurrency)
        self._pumping = False
        self._started = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._calls: set[Call] = set()  # pipelined calls are swept by their pools
        self._tasks: set[asyncio.Task[None]] = set()
        self._aa_rate = aa_rate
        self._aa_tokens: dict[str, tuple[float, float]] = {}
        self._tallies: dict[tuple[str, str], int] = {}
        # By id() of the rules object: CompareRules hashes field by field, which costs more than the check.
        self._names: dict[int, tuple[CompareRules, frozenset[bytes]]] = {}
        self._noise: dict[str, tuple[float, set[str]]] = {}
        self._closed = False
        self._own_pools: dict[str, UpstreamPool] = {}
        self._pipes: dict[str, PipePool] = {}  # pipelined GETs, per upstream (see proxy.upstream.pipe)
        self._queued_bytes = 0
        self._sampled_at: dict[tuple[str, str], float] = {}

    def set_settings(self, settings: ShadowSettings) -> None:
        """Adopt reloaded global settings (the queue size and worker count stay as started)."""
        self.settings = settings
        self.body_cap = settings.body_cap
        self.redactor = Redactor(settings.redact)

    def set_table(self, table: RouteTable) -> None:
        """Adopt a reloaded routes table: its shadow settings, and new pools for changed upstreams."""
        self.set_settings(table.shadow_settings)
        if self._own_pools:
            old = dict(self._own_pools)
            fresh = {}
            for name, spec in table.upstreams.items():
                pool = old.get(name)
                fresh[name] = pool if pool is not None and pool.spec == spec else UpstreamPool(spec)
            for name, pool in old.items():
                if fresh.get(name) is not pool:
                    pool.close()
            self._own_pools = fresh
            self.pools = fresh
        for name, pipe in list(self._pipes.items()):
            if table.upstreams.get(name) != pipe.spec:
                pipe.close()  # the calls in flight on it finish; new ones go to a new pipe
                del self._pipes[name]

    # -- the data path's side: synchronous and cheap ------------------------------------------------

    def wants(self, route: Route, method: str) -> bool:
        """Whether this request is sampled for shadowing; counts it as seen (and skipped writes)."""
        spec = route.shadow
        if spec is None or self._closed:
            return False
        name = route.name
        self.store.count(name, "seen")
        if spec.sample < 1.0 and self._rand() >= spec.sample:
            return False
        if method not in SAFE:
            if not spec.writes:
                return False
            if route.target != CONTROL or self.secret is None:
                # The copy would go to legacy, or new cannot verify a dry run: never a second real write.
                self.store.count(name, "skipped")
                COMPARISONS.labels(name, "skipped").inc()
                return False
        return True

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange for comparison, or drop and count it when the queue is full."""
        name = exchange.route.name
        self.store.count(name, "sampled")
        if self._started and not self._waiting and self._running < self._concurrency and not self._closed:
            self._idle.clear()
            self._start(exchange)  # room to start it now (the common case): no queueing
            return
        size = len(exchange.request_body or b"") + len(exchange.response_body or b"")
        # The queue is bounded in count and in bytes: 1000 jobs of 1 MiB bodies would be 2 GiB.
        if (
            self._closed
            or (self._maxsize > 0 and len(self._waiting) >= self._maxsize)
            or self._queued_bytes + size > MAX_QUEUED_BYTES
        ):
            self.store.count(name, "dropped")
            DROPS.labels(name).inc()
            return
        self._waiting.append(exchange)
        self._queued_bytes += size
        self._idle.clear()
        if self._started:
            self._pump()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start taking work, the deadline sweep and the periodic flush."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)
        self._spawn(self._flusher(), "shadow-flush")
        self._pump()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting work, let queued work finish within ``grace`` seconds, then cancel and flush."""
        self._closed = True
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for call in list(self._calls):
            call.cancel()
        self._calls.clear()
        for pipe in self._pipes.values():
            pipe.close(abort=True)
        self._pipes.clear()
        self._waiting.clear()
        self._queued_bytes = 0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._running = 0  # the cancelled jobs never settle
        self._idle.set()
        self._flush_tallies()
        await self.store.flush()

    async def drain(self) -> None:
        """Wait until every queued exchange has been compared and recorded (tests, shutdown)."""
        await self._idle.wait()
        self._flush_tallies()
        await self.store.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self._flush_tallies()
            try:
                await self.store.flush()
            except Exception:  # the store already logs its own failures; this is a last resort
                log.exception("shadow store flush failed")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        # The loop keeps only weak references to tasks: hold them until they end.
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _sweep(self) -> None:
        # One timer for every call in flight, instead of an asyncio.timeout per call.
        assert self._loop is not None
        now = self._loop.time()
        try:
            for call in [c for c in self._calls if now >= c.deadline]:
                call.expire(now)
            for pipe in list(self._pipes.values()):  # an expiry's callback may start a new pipe
                pipe.sweep(now)
        except Exception:  # never lose the sweep: every later deadline depends on it
            log.exception("shadow deadline sweep failed")
        finally:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    # -- jobs: at most ``concurrency`` exchanges in flight, each a few callbacks -----------------------

    def _pump(self) -> None:
        if self._pumping:
            return  # a job that finished synchronously inside this loop: the loop picks up the slack
        self._pumping = True
        try:
            while self._running < self._concurrency and self._waiting and self._started:
                ex = self._waiting.popleft()
                self._queued_bytes -= len(ex.request_body or b"") + len(ex.response_body or b"")
                self._start(ex)
        finally:
            self._pumping = False

    def _start(self, ex: Exchange) -> None:
        self._running += 1
        try:
            self._begin(ex)
        except Exception:
            log.exception("shadow comparison failed for route %s", ex.route.name)
            COMPARISONS.labels(ex.route.name, "error").inc()
            self._job_done()

    def _job_done(self) -> None:
        self._running -= 1
        if self._waiting:
            self._pump()
        if self._running == 0 and not self._waiting:
            self._idle.set()

    def _begin(self, ex: Exchange) -> None:
        route = ex.route
        name = route.name
        spec = route.shadow
        timeout = spec.timeout if spec is not None and spec.timeout > 0 else self.settings.timeout
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        safe = ex.method in SAFE
        if ex.response_body is None and not ex.response_headers:
            # No upstream response at all: the gateway answered 502/504 itself. That is the primary's error.
            self._record_error(ex, _Failed(ex.primary, f"no upstream response (gateway sent {ex.status})"))
            self._job_done()
            return
        unreplayable = ex.request_body is None or (ex.response_body is None and not safe)
        if unreplayable or (not safe and (other != CANDIDATE or self.secret is None)):
            self.store.count(name, "skipped")
            COMPARISONS.labels(name, "skipped").inc()
            self._job_done()
            return
        aa_share = self.settings.aa_sample
        aa = safe and aa_share > 0 and self._rand() < aa_share and self._aa_due(name)
        if not aa and ex.method == "GET" and ex.response_body is not None and not ex.request_body:
            pool = self.pools.get(other)
            if isinstance(pool, UpstreamPool):  # the common case: one pipelined GET, see _one_done
                self._pipe_call(ex, other, pool, timeout, self._one_done)
                return
        calls = [("other", other)]
        if ex.response_body is None:
            calls.append(("primary", ex.primary))  # too large to tee: fetch again, hash
        if aa:
            calls.append(("aa", CONTROL))
        job = _Job(ex, other, len(calls))
        for key, side in calls:
            self._call(job, key, side, timeout)

    def _one_done(self, call: PipeCall) -> None:
        # The other side's answer to a job of one GET. Identical answers (the common case) are counted
        # here; anything else goes the general way (_settle, _complete).
        ex: Exchange = call.tag  # type: ignore[assignment]  # set by _pipe_call
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        res: Fetched | _Failed
        result = call.result
        if result is None:
            exc = call.error
            assert exc is not None
            res = _Failed(other, f"{exc.kind}: {exc.message}")
        else:
            status, headers, body = result
            seconds = call.latency
            # `identical` without building its tuples (this runs for every compared GET).
            if (
                status == ex.status
                and body == ex.response_body
                and len(body) <= self.body_cap
                and same_headers(ex.response_headers, headers, self._identity_names(ex.route.compare))
            ):
                name = ex.route.name
                if other == CANDIDATE:
                    self.store.matched(name, ex.latency_s, seconds)
                else:
                    self.store.matched(name, seconds, ex.latency_s)
                self._tally(name, "matched")
                self._job_done()
                return
            res = (status, headers, body, seconds)
        self._settle(_Job(ex, other, 1), "other", res)

    def _identity_names(self, rules: CompareRules) -> frozenset[bytes]:
        entry = self._names.get(id(rules))
        if entry is None or entry[0] is not rules:
            if len(self._names) >= 1024:  # reloads make new rules objects: forget, rather than grow
                self._names.clear()
            entry = self._names[id(rules)] = (rules, identity_headers(rules))
        return entry[1]

    def _pipe_call(
        self, ex: Exchange, side: str, pool: UpstreamPool, limit: float, done: Callable[[PipeCall], None]
    ) -> None:
        # A GET without a body, pipelined with others (proxy.upstream.pipe); the request bytes are made from
        # the forwarded header lines as they are.
        path_qs = ex.path_qs
        lines = ex.request_lines
        # The data path's lines hold no Host, framing or hop-by-hop header: only a client's own dry-run
        # header can be among _DROP_HEADERS, and a shadow read never carries one.
        head = b"\r\n".join(lines)
        if lines and b"x-strangler-dry-run" not in head.lower():
            target = pool.base_path + path_qs.encode("utf-8")
            message = b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n\r\n" % (target, pool.hostport, head)
        else:
            message = build_request(pool, ex.method, path_qs, _replayed(ex), b"")
        pipe = self._pipes.get(side)
        if pipe is None or pipe.spec is not pool.spec:
            assert self._loop is not None
            if pipe is not None:
                pipe.close()
            pipe = PipePool(pool.spec, self._loop, max_conns=min(8, self._concurrency))
            self._pipes[side] = pipe
        pipe.call(message, limit, done, ex)

    def _aa_due(self, route: str) -> bool:
        # A/A calls teach noise, which a trickle learns as well as a flood: a token bucket per route
        # caps them at aa_rate a second (bursts of as many), whatever the traffic.
        now = time.monotonic()
        rate = self._aa_rate
        tokens, last = self._aa_tokens.get(route, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._aa_tokens[route] = (tokens, now)
            return False
        self._aa_tokens[route] = (tokens - 1.0, now)
        return True

    def _call(self, job: _Job, key: str, side: str, limit: float) -> None:
        ex = job.ex
        pool = self.pools.get(side)
        if pool is None:
            self._settle(job, key, _Failed(side, f"no upstream named {side!r}"))
            return
        body = ex.request_body or b""
        if isinstance(pool, UpstreamPool) and ex.method == "GET" and not body:
            self._pipe_call(ex, side, pool, limit, functools.partial(self._called, job, key, side))
            return
        path_qs = ex.path_qs
        headers = _replayed(ex)
        if ex.method not in SAFE:
            assert self.secret is not None and side == CANDIDATE
            signature = dryrun.sign(self.secret, ex.method, path_qs, body)
            headers.append((dryrun.HEADER.encode(), signature.encode()))
        if isinstance(pool, UpstreamPool):
            message = build_request(pool, ex.method, path_qs, headers, body)
            done = functools.partial(self._called, job, key, side)
            call = Call(pool, ex.method, message, limit, done, self._loop)
            self._calls.add(call)
            call.begin()
        else:  # any other Fetcher: its coroutine in a task
            fetching = self._fetch(pool, job, key, side, ex.method, path_qs, headers, body, limit)
            self._spawn(fetching, "shadow-call")

    async def _fetch(
        self, pool: Fetcher, job: _Job, key: str, side: str, method: str, path_qs: str,
        headers: Headers, body: bytes, limit: float,
    ) -> None:  # fmt: skip
        start = time.perf_counter()
        res: Fetched | _Failed
        try:
            async with asyncio.timeout(limit):
                status, rheaders, rbody = await pool.fetch(method, path_qs, headers, body, limit)
            res = (status, rheaders, rbody, time.perf_counter() - start)
        except TimeoutError:
            res = _Failed(side, f"timeout after {limit:g}s")
        except UpstreamError as exc:
            res = _Failed(side, f"{exc.kind}: {exc.message}")
        self._settle(job, key, res)

    def _called(self, job: _Job, key: str, side: str, call: Call | PipeCall) -> None:
        if isinstance(call, Call):
            self._calls.discard(call)
        if call.result is not None:
            status, headers, body = call.result
            seconds: float | None
            if isinstance(call, PipeCall):
                seconds = call.latency
            else:
                assert self._loop is not None
                seconds = self._loop.time() - call.started
            self._settle(job, key, (status, headers, body, seconds))
        else:
            exc = call.error
            assert exc is not None
            self._settle(job, key, _Failed(side, f"{exc.kind}: {exc.message}"))

    def _settle(self, job: _Job, key: str, res: Fetched | _Failed) -> None:
        job.results[key] = res
        job.pending -= 1
        if job.pending:
            return
        deferred = False
        try:
            deferred = self._complete(job)
        except Exception:
            log.exception("shadow comparison failed for route %s", job.ex.route.name)
            COMPARISONS.labels(job.ex.route.name, "error").inc()
        if not deferred:
            self._job_done()

    # -- one exchange --------------------------------------------------------------------------------

    def _complete(self, job: _Job) -> bool:
        """Compare and record a job whose calls are all back; True when it finishes in a task."""
        ex = job.ex
        route = ex.route
        name = route.name
        other = job.other
        results = job.results
        raw: dict[str, Fetched] = {}
        for key, side in (("other", other), ("primary", ex.primary)):
            res = results.get(key)
            if key == "primary" and res is None:
                raw[side] = (ex.status, ex.response_headers, ex.response_body or b"", ex.latency_s)
            elif isinstance(res, _Failed):
                self._record_error(ex, res)
                return False
            else:
                assert res is not None
                raw[side] = res
        cap = self.settings.body_cap
        aa_res = results.get("aa")
        second = aa_res if isinstance(aa_res, tuple) else None  # a failed A/A call only loses the noise check
        # The second control call ran from this worker at the same moment as the candidate call, so its
        # latency is measured under the same conditions; the primary's was measured by the data path.
        control_s = second[3] if second is not None and ex.primary == CONTROL else raw[CONTROL][3]
        candidate_s = raw[CANDIDATE][3]
        rules = route.compare
        names = self._identity_names(rules)
        if aa_res is None and identical(raw[CONTROL], raw[CANDIDATE], rules, cap, names):
            # The common case: same status, compared headers and body bytes. Nothing to parse.
            self.store.matched(name, control_s, candidate_s)
            self._tally(name, "matched")
            return False
        # A body over the cap (or not teed) is compared by hash, and then so is the other side's.
        force_hash = ex.response_body is None or any(len(r[2]) > cap for r in raw.values())
        sides = {s: (_observed(st, h, b, cap, force_hash), lat, b) for s, (st, h, b, lat) in raw.items()}
        control, _, control_raw = sides[CONTROL]
        candidate, _, candidate_raw = sides[CANDIDATE]
        if control_s is not None:
            self.store.latency(name, "control", control_s)
        if candidate_s is not None:
            self.store.latency(name, "candidate", candidate_s)
        diff = compare(control, candidate, route.compare, cap)
        aa_paths: tuple[str, ...] = ()
        if second is not None:
            aa_obs = _observed(second[0], second[1], second[2], cap, force_hash)
            aa_diff = compare(control, aa_obs, route.compare, cap)
            if aa_diff is not None:
                self.store.noise(name, aa_diff.paths)
                aa_paths = aa_diff.paths
        if diff is None:
            self.store.count(name, "compared")
            self.store.count(name, "matched")
            self._tally(name, "matched")
            return False
        sample = (ex, diff, control, candidate, control_raw, candidate_raw, control_s, candidate_s)
        cached = self._noise.get(name)
        if cached is not None and time.monotonic() - cached[0] <= NOISE_REFRESH_S:
            cached[1].update(aa_paths)
            self._differed(name, diff, cached[1], sample)
            return False
        self._spawn(self._differed_later(name, diff, aa_paths, sample), "shadow-noise")
        return True

    async def _differed_later(
        self, name: str, diff: Diff, aa_paths: tuple[str, ...], sample: tuple[Any, ...]
    ) -> None:
        try:
            noise = await self._noise_paths(name)
            noise.update(aa_paths)
            self._differed(name, diff, noise, sample)
        except Exception:
            log.exception("shadow comparison failed for route %s", name)
            COMPARISONS.labels(name, "error").inc()
        finally:
            self._job_done()

    def _differed(self, name: str, diff: Diff, noise: set[str], sample: tuple[Any, ...]) -> None:
        self.store.count(name, "compared")
        self.store.differed(name, diff.signature, diff.paths)
        result = "noise" if all(p in noise for p in diff.paths) else "differed"
        if result == "differed" and self._sample_due(name, diff.signature):
            self.store.sample(self._sample(*sample))
        self.store.count(name, result)
        self._tally(name, result)

    def _tally(self, route: str, result: str) -> None:
        # A prometheus_client inc takes a lock (and, with workers, a getpid and an mmap write): tally in a
        # dict and add the sums at each flush instead.
        key = (route, result)
        self._tallies[key] = self._tallies.get(key, 0) + 1

    def _flush_tallies(self) -> None:
        tallies, self._tallies = self._tallies, {}
        for (route, result), n in tallies.items():
            COMPARISONS.labels(route, result).inc(n)

    def _sample_due(self, route: str, signature: str) -> bool:
        # Storage keeps a few samples per signature anyway; building one (redaction) costs far more
        # than comparing, so each process builds at most one per signature every SAMPLE_INTERVAL_S.
        now = time.monotonic()
        key = (route, signature)
        last = self._sampled_at.get(key)
        if last is not None and now - last < SAMPLE_INTERVAL_S:
            return False
        if len(self._sampled_at) >= 10000:  # many distinct signatures: forget, rather than grow
            self._sampled_at.clear()
        self._sampled_at[key] = now
        return True

    async def _noise_paths(self, route: str) -> set[str]:
        now = time.monotonic()
        cached = self._noise.get(route)
        if cached is None or now - cached[0] > NOISE_REFRESH_S:
            try:
                paths = await self.store.noise_paths(route)
            except Exception:
                log.warning("could not read noise paths of route %s; using the cached ones", route)
                paths = cached[1] if cached else set()
            cached = (now, paths)
            self._noise[route] = cached
        return cached[1]

    def _record_error(self, ex: Exchange, failure: _Failed) -> None:
        side = "control" if failure.side == CONTROL else "candidate"
        self.store.count(ex.route.name, f"errors_{side}")
        COMPARISONS.labels(ex.route.name, "error").inc()
        log.info("shadow call failed on route %s: %s", ex.route.name, failure)

    def _sample(
        self, ex: Exchange, diff: Diff, control: Observed, candidate: Observed,
        control_raw: bytes, candidate_raw: bytes, control_s: float | None, candidate_s: float | None,
    ) -> Sample:  # fmt: skip
        r = self.redactor
        differences = [_trim(r.difference(d.as_json())) for d in diff.differences[:STORED_DIFFERENCES]]
        return Sample(
            route=ex.route.name,
            signature=diff.signature,
            method=ex.method,
            path=r.path_qs(ex.path_qs),
            primary=ex.primary,
            control_status=control.status,
            candidate_status=candidate.status,
            diff=differences,
            control_body=self._body(control, control_raw),
            candidate_body=self._body(candidate, candidate_raw),
            control_ms=None if control_s is None else round(control_s * 1000, 3),
            candidate_ms=None if candidate_s is None else round(candidate_s * 1000, 3),
        )

    def _body(self, obs: Observed, raw: bytes) -> str:
        decoded = decode_body(raw, obs.header("content-encoding"), self.settings.body_cap)
        if decoded is None:
            return f"<{len(raw)} bytes, {obs.header('content-encoding')} encoded>"
        head = decoded[: STORED_BODY_CHARS * 4]  # enough bytes for the stored characters
        return self.redactor.body(head, obs.header("content-type"), STORED_BODY_CHARS)


def _trim(diff: dict[str, Any]) -> dict[str, Any]:
    # A missing subtree can be large: keep each stored value short (as JSON text when cut).
    for side in ("control", "candidate"):
        value = diff.get(side)
        if isinstance(value, dict | list):
            text = orjson.dumps(value).decode()
            if len(text) > STORED_VALUE_CHARS:
                diff[side] = text[:STORED_VALUE_CHARS] + "…"
        elif isinstance(value, str) and len(value) > STORED_VALUE_CHARS:
            diff[side] = value[:STORED_VALUE_CHARS] + "…"
    return diff


@contextlib.asynccontextmanager
async def open_sink(
    settings: object, table: RouteTable, env: Mapping[str, str] | None = None
) -> AsyncIterator[Shadower | None]:
    """The gateway's shadow sink (each serving process opens one), or None without REDIS_URL.

    Reads REDIS_URL (counters; required), DATABASE_URL (differing samples; optional),
    STRANGLER_SHADOW_PREFIX (Redis key prefix) and STRANGLER_DRY_RUN_SECRET / DRY_RUN_SECRET (needed to
    shadow writes). Shadow calls use pools of their own, separate from the data path's.
    """
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL")
    if not redis_url:
        log.warning("shadowing is off: REDIS_URL is unset (shadow counters live in Redis); set it, restart")
        yield None
        return
    prefix = env.get("STRANGLER_SHADOW_PREFIX", DEFAULT_PREFIX)
    store = await RedisPgStore.connect_lenient(redis_url, env.get("DATABASE_URL"), prefix)
    pools = {name: UpstreamPool(spec) for name, spec in table.upstreams.items()}
    shadower = Shadower(table.shadow_settings, pools, store, secret=dryrun.secret_from_env(env))
    shadower._own_pools = pools  # ours to reconcile on reload and to close
    await shadower.start()
    try:
        yield shadower
    finally:
        try:
            await shadower.close()
        finally:
            for pool in shadower.pools.values():
                if isinstance(pool, UpstreamPool):
                    pool.close()
            await store.aclose()
