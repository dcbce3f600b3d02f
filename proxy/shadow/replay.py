"""Replay: a shadow copy of a request sent to the other side, and its answer handed to the judge. Does I/O.

Everything that knows the upstream pool types is here: a GET without a body is pipelined
(``proxy.upstream.pipe``), any other request is one buffered ``proxy.upstream.call.Call`` on the pool, and a
pool that is not an ``UpstreamPool`` (any ``Fetcher``) is awaited in a task. No task, future or timer per
call: the owner's periodic ``sweep`` enforces the deadlines. Requests that change data are sent only to
the candidate, signed as a dry run (``proxy.shadow.dryrun``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from proxy.http1.errors import UpstreamError
from proxy.routing.table import RouteTable, UpstreamSpec
from proxy.server.exchange import Exchange, Headers
from proxy.shadow import dryrun
from proxy.shadow.bytecheck import same_headers
from proxy.shadow.judge import CANDIDATE, CONTROL, SAFE, Failed, Fetched, Job, Judge, Spawn
from proxy.shadow.store import DiffStore
from proxy.upstream.call import Call, build_request
from proxy.upstream.pipe import PipeCall, PipePool
from proxy.upstream.pool import UpstreamPool

__all__ = ["Fetcher", "Replayer", "close_pools", "open_pools"]

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


def open_pools(upstreams: Mapping[str, UpstreamSpec]) -> dict[str, UpstreamPool]:
    """Pools of the shadow's own, one per upstream, separate from the data path's."""
    return {name: UpstreamPool(spec) for name, spec in upstreams.items()}


def close_pools(pools: Mapping[str, Fetcher]) -> None:
    """Close the pools among ``pools`` that can be closed (any other Fetcher is its owner's)."""
    for pool in pools.values():
        if isinstance(pool, UpstreamPool):
            pool.close()


def _replayed(ex: Exchange) -> Headers:
    """The request headers a shadow call sends: the forwarded ones less `_DROP_HEADERS`."""
    return [(k, v) for k, v in ex.request_headers if k.lower() not in _DROP_HEADERS]


def _host(pool: UpstreamPool, ex: Exchange) -> bytes:
    """The Host a shadow call sends: the client's, as the primary got it, unless ``host: upstream``."""
    return ex.client_host if pool.client_host and ex.client_host else pool.hostport


class Replayer:
    """Sends shadow calls on pools and pipes, and settles each answer with the judge.

    ``pools`` are by upstream name; with ``own_pools`` they are this replayer's, replaced on reload when
    their upstream changes. The pipes (one per upstream) are always its own.
    """

    def __init__(
        self, pools: Mapping[str, Fetcher], store: DiffStore, judge: Judge, job_done: Callable[[], None],
        spawn: Spawn, *, secret: bytes | None, max_conns: int, body_cap: int, own_pools: bool = False,
    ) -> None:  # fmt: skip
        self.pools = pools
        self.store = store
        self.secret = secret
        self.body_cap = body_cap  # bytes of a body compared byte for byte (see one_done)
        self._max_conns = max_conns
        self._own_pools: dict[str, UpstreamPool] = {}
        if own_pools:
            self._own_pools = {k: v for k, v in pools.items() if isinstance(v, UpstreamPool)}
        self._pipes: dict[str, PipePool] = {}  # pipelined GETs, per upstream (see proxy.upstream.pipe)
        self._calls: set[Call] = set()  # pipelined calls are swept by their pools
        self._loop: asyncio.AbstractEventLoop | None = None
        # The judge's methods, bound once: one_done runs for every compared GET.
        self._settle = judge.settle
        self._tally = judge.tally
        self._identity_names = judge.identity_names
        self._job_done = job_done
        self._spawn = spawn

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the running loop (calls and pipes need it)."""
        self._loop = loop

    def set_table(self, table: RouteTable) -> None:
        """Adopt a reloaded table: new own pools and pipes for the upstreams that changed."""
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

    def sweep(self, now: float) -> None:
        """Fail the calls past their deadline (``now`` on the loop's clock, as the calls' deadlines)."""
        for call in [c for c in self._calls if now >= c.deadline]:
            call.expire(now)
        for pipe in list(self._pipes.values()):  # an expiry's callback may start a new pipe
            pipe.sweep(now)

    def close(self) -> None:
        """Drop every call in flight without settling it, and abort the pipes (shutdown)."""
        for call in list(self._calls):
            call.cancel()
        self._calls.clear()
        for pipe in self._pipes.values():
            pipe.close(abort=True)
        self._pipes.clear()

    def pipe_get(self, ex: Exchange, side: str, limit: float, done: Callable[[PipeCall], None]) -> bool:
        """Pipeline a GET without a body to ``side``; False when that side's pool cannot pipeline."""
        pool = self.pools.get(side)
        if not isinstance(pool, UpstreamPool):
            return False
        # The request bytes are made from the forwarded header lines as they are.
        path_qs = ex.path_qs
        lines = ex.request_lines
        # The data path's lines hold no Host, framing or hop-by-hop header: only a client's own dry-run
        # header can be among _DROP_HEADERS, and a shadow read never carries one.
        head = b"\r\n".join(lines)
        if lines and b"x-strangler-dry-run" not in head.lower():
            target = pool.base_path + path_qs.encode("utf-8")
            message = b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n\r\n" % (target, _host(pool, ex), head)
        else:
            message = build_request(pool, ex.method, path_qs, _replayed(ex), b"", _host(pool, ex))
        pipe = self._pipes.get(side)
        if pipe is None or pipe.spec is not pool.spec:
            assert self._loop is not None
            if pipe is not None:
                pipe.close()
            pipe = PipePool(pool.spec, self._loop, max_conns=self._max_conns)
            self._pipes[side] = pipe
        pipe.call(message, limit, done, ex)
        return True

    def one_done(self, call: PipeCall) -> None:
        """The other side's answer to a job of one pipelined GET (``pipe_get``'s ``done``).

        Identical answers (the common case) are counted here, with the judge's byte check inlined;
        anything else goes the general way (``Judge.settle``).
        """
        ex: Exchange = call.tag  # type: ignore[assignment]  # set by pipe_get
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        res: Fetched | Failed
        result = call.result
        if result is None:
            exc = call.error
            assert exc is not None
            res = Failed(other, f"{exc.kind}: {exc.message}")
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
        self._settle(Job(ex, other, 1), "other", res)

    def call(self, job: Job, key: str, side: str, limit: float) -> None:
        """Send one of a job's calls to ``side``; its result is settled with the judge."""
        ex = job.ex
        pool = self.pools.get(side)
        if pool is None:
            self._settle(job, key, Failed(side, f"no upstream named {side!r}"))
            return
        body = ex.request_body or b""
        if ex.method == "GET" and not body and isinstance(pool, UpstreamPool):
            self.pipe_get(ex, side, limit, functools.partial(self._called, job, key, side))
            return
        path_qs = ex.path_qs
        headers = _replayed(ex)
        if ex.method not in SAFE:
            assert self.secret is not None and side == CANDIDATE
            signature = dryrun.sign(self.secret, ex.method, path_qs, body)
            headers.append((dryrun.HEADER.encode(), signature.encode()))
        if isinstance(pool, UpstreamPool):
            message = build_request(pool, ex.method, path_qs, headers, body, _host(pool, ex))
            done = functools.partial(self._called, job, key, side)
            call = Call(pool, ex.method, message, limit, done, self._loop)
            self._calls.add(call)
            call.begin()
        else:  # any other Fetcher: its coroutine in a task
            fetching = self._fetch(pool, job, key, side, ex.method, path_qs, headers, body, limit)
            self._spawn(fetching, "shadow-call")

    async def _fetch(
        self, pool: Fetcher, job: Job, key: str, side: str, method: str, path_qs: str,
        headers: Headers, body: bytes, limit: float,
    ) -> None:  # fmt: skip
        start = time.perf_counter()
        res: Fetched | Failed
        try:
            async with asyncio.timeout(limit):
                status, rheaders, rbody = await pool.fetch(method, path_qs, headers, body, limit)
            res = (status, rheaders, rbody, time.perf_counter() - start)
        except TimeoutError:
            res = Failed(side, f"timeout after {limit:g}s")
        except UpstreamError as exc:
            res = Failed(side, f"{exc.kind}: {exc.message}")
        self._settle(job, key, res)

    def _called(self, job: Job, key: str, side: str, call: Call | PipeCall) -> None:
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
            self._settle(job, key, Failed(side, f"{exc.kind}: {exc.message}"))
