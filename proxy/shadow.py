"""Shadowing: copy a sample of requests to the backend that did not serve them, compare, record.

The data path calls ``wants(route, method)`` when a request starts and ``submit(exchange)`` after the
client has its response; both are synchronous and cheap (a random draw, a bounded-queue put). When the
queue is full the exchange is dropped and counted. ``concurrency`` worker tasks replay each exchange on
pools of their own, each call under its own timeout, so a slow or hanging shadow backend never reaches
the client.

Legacy is always the *control* and new the *candidate*, whichever served. Reads (GET/HEAD) are shadowed
by default; a write only when the route says ``writes: true``, and then only to new, signed as a dry run
(legacy has no dry run: such a write is counted as skipped). For an ``aa_sample`` share of reads the
control is called twice: paths that differ between two control calls are noise for that route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import orjson
from prometheus_client import Counter as PromCounter

from proxy import dryrun
from proxy.compare import Diff, Observed, compare, decode_body
from proxy.diffstore import DEFAULT_PREFIX, DiffStore, RedisPgStore, Sample
from proxy.errors import UpstreamError
from proxy.exchange import Exchange, Headers
from proxy.redact import Redactor
from proxy.routes import Route, RouteTable, ShadowSettings
from proxy.upstream import UpstreamPool

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


Fetched = tuple[int, Headers, bytes, float]  # status, headers, body, seconds


class _Failed(Exception):
    """One side of a shadow call failed: ``side`` and a short reason."""

    def __init__(self, side: str, reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


def _observed(status: int, headers: Headers, body: bytes, cap: int, force_hash: bool) -> Observed:
    text = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    if force_hash or len(body) > cap:
        return Observed(status, text, b"", complete=False, digest=hashlib.sha256(body).hexdigest())
    return Observed(status, text, body)


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
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.store = store
        self.secret = secret
        self.redactor = Redactor(settings.redact)
        self._rand = rand
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(maxsize=settings.queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._noise: dict[str, tuple[float, set[str]]] = {}
        self._closed = False
        self._own_pools: dict[str, UpstreamPool] = {}
        self._queued_bytes = 0
        self._sampled_at: dict[tuple[str, str], float] = {}

    @property
    def body_cap(self) -> int:
        """Bytes of each body the data path tees for comparison."""
        return self.settings.body_cap

    def set_settings(self, settings: ShadowSettings) -> None:
        """Adopt reloaded global settings (the queue size and worker count stay as started)."""
        self.settings = settings
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
        size = len(exchange.request_body or b"") + len(exchange.response_body or b"")
        try:
            # The queue is bounded in count and in bytes: 1000 jobs of 1 MiB bodies would be 2 GiB.
            if self._closed or self._queued_bytes + size > MAX_QUEUED_BYTES:
                raise asyncio.QueueFull
            self._queue.put_nowait(exchange)
            self._queued_bytes += size
        except asyncio.QueueFull:
            self.store.count(name, "dropped")
            DROPS.labels(name).inc()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and the periodic flush (references kept: the loop holds only weak ones)."""
        if self._tasks:
            return
        for i in range(max(1, self.settings.concurrency)):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"shadow-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="shadow-flush"))

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting work, let queued work finish within ``grace`` seconds, then cancel and flush."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.store.flush()

    async def drain(self) -> None:
        """Wait until every queued exchange has been compared and recorded (tests, shutdown)."""
        await self._queue.join()
        await self.store.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.store.flush()
            except Exception:  # the store already logs its own failures; this is a last resort
                log.exception("shadow store flush failed")

    async def _worker(self) -> None:
        while True:
            exchange = await self._queue.get()
            self._queued_bytes -= len(exchange.request_body or b"") + len(exchange.response_body or b"")
            try:
                await self._handle(exchange)
            except Exception:
                log.exception("shadow comparison failed for route %s", exchange.route.name)
                COMPARISONS.labels(exchange.route.name, "error").inc()
            finally:
                self._queue.task_done()

    # -- one exchange --------------------------------------------------------------------------------

    async def _call(self, side: str, ex: Exchange, limit: float) -> Fetched:
        pool = self.pools.get(side)
        if pool is None:
            raise _Failed(side, f"no upstream named {side!r}")
        path_qs = ex.path + ("?" + ex.query if ex.query else "")
        headers = [(k, v) for k, v in ex.request_headers if k.lower() not in _DROP_HEADERS]
        if ex.method not in SAFE:
            assert self.secret is not None and side == CANDIDATE
            headers.append((dryrun.HEADER.encode(), dryrun.sign(self.secret, ex.method, path_qs).encode()))
        start = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                body = ex.request_body or b""
                status, rheaders, body = await pool.fetch(ex.method, path_qs, headers, body, limit)
        except TimeoutError:
            raise _Failed(side, f"timeout after {limit:g}s") from None
        except UpstreamError as exc:
            raise _Failed(side, f"{exc.kind}: {exc.message}") from None
        return status, rheaders, body, time.perf_counter() - start

    async def _handle(self, ex: Exchange) -> None:
        route = ex.route
        name = route.name
        spec = route.shadow
        timeout = spec.timeout if spec is not None and spec.timeout > 0 else self.settings.timeout
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        safe = ex.method in SAFE
        if ex.response_body is None and not ex.response_headers:
            # No upstream response at all: the gateway answered 502/504 itself. That is the primary's error.
            self._record_error(ex, _Failed(ex.primary, f"no upstream response (gateway sent {ex.status})"))
            return
        unreplayable = ex.request_body is None or (ex.response_body is None and not safe)
        if unreplayable or (not safe and (other != CANDIDATE or self.secret is None)):
            self.store.count(name, "skipped")
            COMPARISONS.labels(name, "skipped").inc()
            return
        aa = safe and self.settings.aa_sample > 0 and self._rand() < self.settings.aa_sample
        calls: dict[str, Awaitable[Fetched]] = {"other": self._call(other, ex, timeout)}
        if ex.response_body is None:
            calls["primary"] = self._call(ex.primary, ex, timeout)  # too large to tee: fetch again, hash
        if aa:
            calls["aa"] = self._call(CONTROL, ex, timeout)
        results: dict[str, Any]
        if len(calls) == 1:  # the common case: no task, no gather
            try:
                results = {"other": await calls["other"]}
            except _Failed as failure:
                results = {"other": failure}
        else:
            done = await asyncio.gather(*calls.values(), return_exceptions=True)
            results = dict(zip(calls, done, strict=True))
        raw: dict[str, Fetched] = {}
        for key, side in (("other", other), ("primary", ex.primary)):
            res = results.get(key)
            if key == "primary" and res is None:
                raw[side] = (ex.status, ex.response_headers, ex.response_body or b"", ex.latency_s)
            elif isinstance(res, _Failed):
                self._record_error(ex, res)
                return
            elif isinstance(res, BaseException):
                raise res
            else:
                assert res is not None
                raw[side] = res
        cap = self.settings.body_cap
        # A body over the cap (or not teed) is compared by hash, and then so is the other side's.
        force_hash = ex.response_body is None or any(len(r[2]) > cap for r in raw.values())
        sides = {s: (_observed(st, h, b, cap, force_hash), lat, b) for s, (st, h, b, lat) in raw.items()}
        control, control_s, control_raw = sides[CONTROL]
        candidate, candidate_s, candidate_raw = sides[CANDIDATE]
        aa_res = results.get("aa")
        second = aa_res if isinstance(aa_res, tuple) else None  # a failed A/A call only loses the noise check
        # The second control call ran from this worker at the same moment as the candidate call, so its
        # latency is measured under the same conditions; the primary's was measured by the data path.
        timed_control = second[3] if second is not None and ex.primary == CONTROL else control_s
        self.store.latency(name, "control", timed_control)
        self.store.latency(name, "candidate", candidate_s)
        diff = compare(control, candidate, route.compare, cap)
        noise = await self._noise_paths(name)
        if second is not None:
            aa_obs = _observed(second[0], second[1], second[2], cap, force_hash)
            aa_diff = compare(control, aa_obs, route.compare, cap)
            if aa_diff is not None:
                self.store.noise(name, aa_diff.paths)
                noise.update(aa_diff.paths)
        self.store.count(name, "compared")
        if diff is None:
            result = "matched"
        else:
            self.store.differed(name, diff.signature, diff.paths)
            result = "noise" if all(p in noise for p in diff.paths) else "differed"
            if result == "differed" and self._sample_due(name, diff.signature):
                self.store.sample(self._sample(ex, diff, control, candidate, control_raw, candidate_raw,
                                               control_s, candidate_s))
        self.store.count(name, result)
        COMPARISONS.labels(name, result).inc()

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
        control_raw: bytes, candidate_raw: bytes, control_s: float, candidate_s: float,
    ) -> Sample:  # fmt: skip
        r = self.redactor
        differences = [_trim(r.difference(d.as_json())) for d in diff.differences[:STORED_DIFFERENCES]]
        return Sample(
            route=ex.route.name,
            signature=diff.signature,
            method=ex.method,
            path=r.path_qs(ex.path + ("?" + ex.query if ex.query else "")),
            primary=ex.primary,
            control_status=control.status,
            candidate_status=candidate.status,
            diff=differences,
            control_body=self._body(control, control_raw),
            candidate_body=self._body(candidate, candidate_raw),
            control_ms=round(control_s * 1000, 3),
            candidate_ms=round(candidate_s * 1000, 3),
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
    """The gateway's shadow sink (``proxy.app.open_shadow`` calls this), or None without REDIS_URL.

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
