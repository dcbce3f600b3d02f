"""Admission: which requests are shadowed, the bounded queue, the jobs in flight, start and stop. No I/O
of its own (replay does it; ``proxy.ops.serve.open_sink`` connects the store and starts the shadower).

The data path calls ``wants(route, method)`` when a request starts and ``submit(exchange)`` after the
client has its response; both are synchronous and cheap (a random draw, a bounded-queue put). When the
queue is full the exchange is dropped and counted. At most ``concurrency`` exchanges are replayed at
once, on pools of their own, as callbacks (``proxy.shadow.replay``: no task, future or timer per call;
one sweep every SWEEP_S enforces the deadlines), so a slow or hanging shadow backend never reaches the
client, except that a sampled write waits for its dry run (at most the route's shadow timeout). Results
are judged by ``proxy.shadow.judge``.

Reads (GET/HEAD) are shadowed by default; a write only when the route says ``writes: true``, and then
only to new, signed as a dry run (legacy has no dry run: a write served by new is counted as
``unavailable_write``, and as skipped if the route asked for it). A write's dry run runs *before* its
primary, while the data path holds the write (``prewrite``, `proxy.shadow.prewrite`): new answers against
the state legacy is about to change, and the exchange submitted afterwards carries that answer. An event
stream or a WebSocket is never shadowed: the data path drops its copy as soon as it knows and calls
``not_comparable`` (counted as ``unavailable_stream`` / ``_websocket``). For an ``aa_sample`` share of
reads the primary's side is called a second time, at most ``aa_rate`` a second per route
(``proxy.shadow.noise``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from prometheus_client import Counter as PromCounter

from proxy.routing.table import Route, RouteTable, ShadowSettings
from proxy.server.exchange import Exchange
from proxy.server.gateway import ShadowSink
from proxy.shadow.judge import CANDIDATE, COMPARISONS, CONTROL, SAFE, Failed, Job, Judge
from proxy.shadow.noise import AA_PER_SECOND, REREAD_PER_SECOND, AaLimiter, Countdown, NoiseBook
from proxy.shadow.prewrite import Prewrite, Prewrites
from proxy.shadow.replay import OwnPool, Pool, Replayer
from proxy.shadow.samples import SampleBuilder
from proxy.shadow.store import ANY_METHOD, DiffStore
from proxy.shadow.unanswered import Unanswered

__all__ = ["DROPS", "MAX_QUEUED_BYTES", "SWEEP_S", "Shadower"]

log = logging.getLogger("strangler.shadow")

MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
SWEEP_S: Final = 0.1  # precision of the shadow calls' deadlines

DROPS = PromCounter(
    "strangler_shadow_dropped", "Shadow exchanges dropped because the queue was full.", ["route"]
)


class Shadower(ShadowSink):
    """The ``ShadowSink`` of the gateway: sampling, a bounded queue, and the jobs replayed and judged.

    ``clock`` (``time.monotonic`` by default) times the A/A rate, learned-noise refreshes and sample
    intervals. ``deadline_clock`` is what the sweep compares the calls' deadlines with: the event loop's
    clock by default; the pipelined GETs also set their deadlines and time their latencies on it, so a
    test may run it ahead (or move it by hand) instead of waiting.
    """

    def __init__(
        self,
        settings: ShadowSettings,
        pools: Mapping[str, Pool],
        store: DiffStore,
        *,
        secret: bytes | None = None,
        rand: Callable[[], float] = random.random,
        flush_interval: float = 0.5,
        aa_rate: float = AA_PER_SECOND,
        reread_rate: float = REREAD_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        deadline_clock: Callable[[], float] | None = None,
        own_pools: bool = False,
    ) -> None:
        super().__init__(settings.body_cap)  # bytes of each body the data path tees for comparison
        self.settings = settings
        self.store = store
        self._counts = store.tally  # counted without a by-name call (see proxy.shadow.store.Tally)
        self.secret = secret
        self._rand = rand
        self._flush_interval = flush_interval
        self._maxsize = settings.queue
        self._concurrency = max(1, settings.concurrency)
        self._waiting: collections.deque[Exchange] = collections.deque()
        self._running = 0  # exchanges in flight (at most concurrency)
        self._pumping = False
        self._started = False
        self._closed = False
        # Who waits for "nothing running or waiting" (drain, close): futures made only then. An
        # asyncio.Event instead cost two interpreted calls (clear, set) per shadowed request on a quiet
        # gateway, where each request finds nothing running.
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._deadline_clock = deadline_clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued_bytes = 0
        self._samples = SampleBuilder(settings, clock)
        self._aa_due = AaLimiter(aa_rate, clock).due
        self._aa_drawn = Countdown(rand)  # which compared reads get an A/A call (settings.aa_sample)
        self._judge = Judge(store, settings.body_cap, NoiseBook(store, clock), self._samples,
                            self._job_done, self._spawn, Unanswered(store, clock))  # fmt: skip
        self._replay = Replayer(
            pools, store, self._judge, self._job_done, secret=secret,
            max_conns=min(8, self._concurrency), body_cap=settings.body_cap, own_pools=own_pools,
        )  # fmt: skip
        self._prewrites = Prewrites(self._replay, store, self._judge.unanswered, self._concurrency)
        self._one_done = self._replay.one_done  # bound once: the callback of every pipelined copy
        self._judge.enable_rereads(self._replay.call, settings.timeout, clock, reread_rate)  # see judge.py

    @property
    def pools(self) -> Mapping[str, Pool]:
        """The pools shadow calls go out on, by upstream name."""
        return self._replay.pools

    @property
    def own_pools(self) -> Mapping[str, OwnPool]:
        """The pools this shadower made for itself (``own_pools``), current after reloads; its owner closes
        them after `close`."""
        return self._replay.own_pools

    def set_settings(self, settings: ShadowSettings) -> None:
        """Adopt reloaded global settings (the queue size and worker count stay as started)."""
        self.settings = settings
        self.body_cap = self._judge.body_cap = self._replay.body_cap = settings.body_cap
        self._judge.reread_timeout = settings.timeout
        self._samples.set_settings(settings)

    def set_table(self, table: RouteTable) -> None:
        """Adopt a reloaded routes table: its shadow settings, and new pools for changed upstreams."""
        self.set_settings(table.shadow_settings)
        self._replay.set_table(table)

    # -- the data path's side: synchronous and cheap ------------------------------------------------

    def wants(self, route: Route, method: str, primary: str = "") -> bool:
        """Whether this request is sampled for shadowing; counts it as seen (and skipped writes).

        ``primary`` is the side serving it (for a ``target: auto`` route, the one the canary picked;
        "": the route's target)."""
        spec = route.shadow
        if spec is None or self._closed:
            return False
        tally = self._counts
        key = tally.key(route, method)  # the store key: route, current epoch, method
        tally.seen(key)
        if spec.sample < 1.0 and self._rand() >= spec.sample:
            return False
        if method not in SAFE:
            if (primary or route.target) != CONTROL:
                # The copy would go to legacy, which has no dry run: never a second real write. Counted
                # so the report says COMPARISON UNAVAILABLE instead of nothing (after a flip writes: false).
                self.store.count(key, "unavailable_write")
                if spec.writes:
                    self.store.count(key, "skipped")
                    COMPARISONS.labels(route.name, "skipped").inc()
                return False
            if not spec.writes:
                return False
            if self.secret is None:  # new could not verify a dry run
                self.store.count(key, "skipped")
                self.store.count(key, "unavailable_secret")
                COMPARISONS.labels(route.name, "skipped").inc()
                return False
        return True

    def not_comparable(self, route: Route, reason: str) -> None:
        """A sampled exchange that cannot be compared (``reason``: ``stream`` for an event stream,
        ``websocket`` for an upgrade, ``write_<why>`` for a write forwarded without its dry run): the data
        path dropped its copy; counted so the report can say why."""
        if reason.startswith("write_"):
            self._prewrites.not_compared(route, reason[6:])
            return
        # A shadow stream would hold a second connection open for as long as the client's and has no end
        # to compare at; a WebSocket copy would be a second live session. Neither is ever opened.
        self.store.count(self.store.key(route, ANY_METHOD), f"unavailable_{reason}")
        COMPARISONS.labels(route.name, "unavailable").inc()

    def fallback(self, route: Route, reason: str) -> None:
        """A request of ``route`` sent to new was served by legacy (``reason``: connect, timeout, reset,
        5xx, circuit; `proxy.server.fallback`): counted per epoch, summed over replicas, for the report."""
        self.store.count(self.store.key(route, ANY_METHOD), f"fallback_{reason}")

    def prewrite(
        self, route: Route, method: str, path_qs: str, lines: list[bytes], body: bytes,
        host: bytes | None, done: Callable[[], None],
    ) -> Prewrite | None:  # fmt: skip
        """Send new's dry run of a sampled write before its primary; ``done()`` runs once it answered,
        failed or timed out (the route's shadow timeout at most). None (counted): forward at once."""
        if self._closed or not self._started:
            self._prewrites.not_compared(route, "closed")
            return None
        spec = route.shadow
        timeout = spec.timeout if spec is not None and spec.timeout > 0 else self.settings.timeout
        return self._prewrites.ask(route, method, path_qs, lines, body, host, done, timeout, SWEEP_S)

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange for comparison, or drop and count it when the queue is full."""
        tally = self._counts
        key = exchange.key = tally.key(exchange.route, exchange.method)  # kept: its comparison counts there
        tally.sampled(key)
        if self._started and not self._waiting and self._running < self._concurrency and not self._closed:
            self._start(exchange)  # room to start it now (the common case): no queueing
            return
        size = _size(exchange)
        # The queue is bounded in count and in bytes: 1000 jobs of 1 MiB bodies would be 2 GiB.
        if (
            self._closed
            or (self._maxsize > 0 and len(self._waiting) >= self._maxsize)
            or self._queued_bytes + size > MAX_QUEUED_BYTES
        ):
            tally.count(key, "dropped")
            DROPS.labels(exchange.route.name).inc()
            return
        self._waiting.append(exchange)
        self._queued_bytes += size
        if self._started:
            self._pump()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start taking work, the deadline sweep and the periodic flush."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        if self._deadline_clock is None:
            self._deadline_clock = self._loop.time
        self._replay.start(self._loop, self._deadline_clock)
        self._prewrites.start(self._deadline_clock)
        self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)
        self._spawn(self._flusher(), "shadow-flush")
        self._pump()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting work, let queued work finish within ``grace`` seconds, then cancel and flush."""
        self._closed = True
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._until_idle()
        self._started = False
        self._prewrites.close()  # the writes held for a dry run go on now
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._replay.close()
        self._waiting.clear()
        self._queued_bytes = 0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._running = 0  # the cancelled jobs never settle
        self._wake_idle()
        self._judge.unanswered.forget()  # this process's part of "not answering" must not outlive it
        self._judge.flush_tallies()
        await self.store.flush()

    async def drain(self) -> None:
        """Wait until every queued exchange has been compared and recorded (tests, shutdown)."""
        await self._until_idle()
        self._judge.flush_tallies()
        await self.store.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self._judge.flush_tallies()
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
        assert self._loop is not None and self._deadline_clock is not None
        try:
            self._replay.sweep(self._deadline_clock())
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
                self._queued_bytes -= _size(ex)
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
        if self._running == 0 and not self._waiting and self._idle_waiters:
            self._wake_idle()

    async def _until_idle(self) -> None:
        while self._running or self._waiting:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _begin(self, ex: Exchange) -> None:
        # Which calls this exchange needs: none (skipped), one pipelined GET (the common case), or a job.
        route = ex.route
        name = route.name
        spec = route.shadow
        timeout = spec.timeout if spec is not None and spec.timeout > 0 else self.settings.timeout
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        method = ex.method
        get = method == "GET"
        safe = get or method == "HEAD"  # `in SAFE`, without a set look-up
        if ex.response_body is None and not ex.response_headers:
            # No upstream response at all: the gateway answered 502/504 itself. That is the primary's error.
            failure = Failed(ex.primary, f"no upstream response (gateway sent {ex.status})")
            self._judge.record_error(ex, failure)
            self._job_done()
            return
        if not safe:  # a write: its dry run ran before the primary (or not at all); compare that
            pw = ex.prewrite
            res = pw.result if isinstance(pw, Prewrite) else None
            if isinstance(res, tuple) and ex.response_body is not None and other == CANDIDATE:
                self._judge.settle(Job(ex, CANDIDATE, 1), "other", res)  # settle frees the slot
                return
            if res is None or ex.response_body is None:  # not dry-run (counted why), or too large
                self.store.count(self.store.key(route, ex.method), "skipped")
                COMPARISONS.labels(name, "skipped").inc()
            self._job_done()  # a failed dry run was counted when it failed
            return
        if ex.request_body is None:
            self.store.count(self.store.key(route, ex.method), "skipped")
            COMPARISONS.labels(name, "skipped").inc()
            self._job_done()
            return
        aa_share = self.settings.aa_sample
        aa = safe and aa_share > 0 and self._aa_drawn.hit(aa_share) and self._aa_due(name)
        if (
            not aa and get and ex.response_body is not None and not ex.request_body
            and self._replay.pipe_get(ex, other, timeout, self._one_done, True)  # see Replayer.one_done
        ):  # fmt: skip
            return
        calls = [("other", other)]
        if ex.response_body is None:
            calls.append(("primary", ex.primary))  # too large to tee: fetch again, hash
        if aa:  # the primary's side again, after its answer: see proxy.shadow.noise
            calls.append(("aa", ex.primary))
        job = Job(ex, other, len(calls))
        for key, side in calls:
            self._replay.call(job, key, side, timeout)


def _size(ex: Exchange) -> int:
    """The bytes an exchange holds that the queue's bound counts: its bodies, and its response's bytes."""
    return len(ex.request_body or b"") + len(ex.response_body or b"") + len(ex.response_raw)
