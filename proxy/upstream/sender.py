"""`Sender`: send a copy of a request to one upstream and be called back with the answer or the error.

Shadowing replays each compared request on the other side. This is the one interface it needs, whatever
the upstream is: ``send`` a request, and ``done(sent)`` runs once with ``sent.result`` (status, headers,
body) or ``sent.error`` (`UpstreamError`), ``sent.latency`` (seconds, or None when not measured) and
``sent.tag`` (the caller's). `sender_for` picks the implementation once, when a pool is adopted:

- `PoolSender`, for an `UpstreamPool`: a GET without a body is *pipelined* (`proxy.upstream.pipe`,
  its latency is measured only when it went out with nothing ahead of it), anything else is a buffered
  `Call` on the pool. No task, future or timer per copy: deadlines are enforced by `sweep`, which the
  owner calls periodically (its period is their precision).
- `FetcherSender`, for any other object with `UpstreamPool.fetch`'s signature (test doubles, adapters):
  each copy is a task under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from proxy.http1.capped import NO_CAP
from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers, header_pairs
from proxy.upstream.call import Call
from proxy.upstream.pipe import Expected, PipeCall, PipePool
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.request import build_get, build_request

__all__ = ["Done", "Fetcher", "FetcherSender", "PoolSender", "Sender", "Sent", "sender_for"]


class Sent(Protocol):
    """What ``done`` receives: one finished copy (`PipeCall`, `Call` and `FetcherSender`'s are ones)."""

    @property
    def tag(self) -> object: ...
    @property
    def result(self) -> tuple[int, Headers, bytes] | None: ...
    @property
    def error(self) -> UpstreamError | None: ...
    @property
    def latency(self) -> float | None: ...


Done = Callable[[Sent], None]


class Sender(Protocol):
    """Sends request copies to one upstream; see the module docstring."""

    @property
    def name(self) -> str: ...

    def send(
        self,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,
    ) -> None:
        """Send one request (Host and framing headers are replaced); ``limit``: seconds to its deadline.

        ``host`` is the client's Host: sent instead of the upstream's unless it says ``host: upstream``."""

    def send_get(
        self,
        target: bytes,
        header_block: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,
        expect: Expected | None = None,
    ) -> None:
        """Send a GET without a body whose header lines are joined already (see `build_get`); ``target`` is
        its path and query, encoded, without the upstream's base path. ``expect`` (None: none) is the answer
        expected (`Expected`): a sender may then report an answer that is it without reading it (a
        `PipeCall` whose ``same`` is true)."""

    def sweep(self, now: float) -> None:
        """Fail the copies past their deadline (``now``: event-loop time); the owner calls it periodically."""

    def set_body_cap(self, cap: int) -> None:
        """Keep at most ``cap`` + 1 bytes of each response body from now on (where the sender reads them)."""

    def close(self, abort: bool = False) -> None:
        """Take no more copies; those in flight finish (``abort``: are dropped without ``done``)."""


class Fetcher(Protocol):
    """The buffered call of an `UpstreamPool`, which other objects may offer too."""

    # The timeout parameter mirrors UpstreamPool.fetch, whose one deadline also covers its retry.
    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, Headers, bytes]: ...


def sender_for(
    pool: UpstreamPool | Fetcher,
    loop: asyncio.AbstractEventLoop,
    *,
    name: str = "",
    max_conns: int = 8,
    body_cap: int = NO_CAP,
    clock: Callable[[], float] | None = None,
) -> Sender:
    """The sender for ``pool``: pipelined and callback-driven for an `UpstreamPool`, tasks otherwise.

    ``max_conns`` bounds the pipelined connections (`PipePool`); buffered calls use the pool's own.
    ``name`` names another `Fetcher`'s upstream in error messages. An `UpstreamPool`'s sender keeps at
    most ``body_cap`` + 1 bytes of a response body and hashes the rest (`proxy.http1.capped`); another
    `Fetcher` returns what it read. ``clock`` times the pipelined copies (their deadlines and
    latencies; the loop's by default).
    """
    if isinstance(pool, UpstreamPool):
        return PoolSender(pool, loop, max_conns=max_conns, body_cap=body_cap, clock=clock)
    return FetcherSender(pool, loop, name)


class PoolSender:
    """Copies to an `UpstreamPool`'s upstream: GETs without a body pipelined, the rest buffered `Call`s."""

    def __init__(
        self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop, *, max_conns: int = 8,
        body_cap: int = NO_CAP,
        clock: Callable[[], float] | None = None,
    ) -> None:  # fmt: skip
        self.pool = pool
        self.body_cap = body_cap
        self.name = pool.name
        self.spec = pool.spec
        self.base_path = pool.base_path
        self.hostport = pool.hostport
        self.loop = loop
        self.closed = False
        self.calls: set[Call] = set()  # buffered calls; finished ones are dropped by the next sweep
        self._pipe = PipePool(pool.spec, loop, max_conns=max_conns, body_cap=body_cap, clock=clock)

    def __repr__(self) -> str:
        return f"<PoolSender {self.name} calls={len(self.calls)} {self._pipe!r}>"

    @property
    def busy(self) -> bool:
        """Whether copies are in flight (a retired sender is swept until it is not)."""
        pipe = self._pipe
        return (
            any(not c.finished for c in self.calls)
            or bool(pipe.waiting)
            or any(c.inflight for c in pipe.conns)
        )

    def send(
        self,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,
    ) -> None:
        """Send one request: pipelined when it is a GET without a body, else a buffered call."""
        message = build_request(self, method, path_qs, headers, body, host if self.pool.client_host else None)
        if method == "GET" and not body:
            pipe = self._pipe
            pipe._send(PipeCall(pipe, message, limit, done, pipe.now(), tag))  # PipePool.call, inlined
            return
        if self.closed:  # (a closed PipePool fails a pipelined copy the same way)
            _refuse(self.name, done, tag)
            return
        call = Call(self.pool, method, message, limit, done, self.loop, tag, self.body_cap)
        self.calls.add(call)
        call.begin()

    def send_get(
        self,
        target: bytes,
        header_block: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,
        expect: Expected | None = None,
    ) -> None:
        """Send a GET without a body, pipelined, from header lines joined already (see `build_get`)."""
        pipe = self._pipe
        message = build_get(
            self.base_path, self.hostport, target, header_block, host if self.pool.client_host else None
        )
        pipe._send(PipeCall(pipe, message, limit, done, pipe.now(), tag, expect))  # PipePool.call, inlined

    def set_body_cap(self, cap: int) -> None:
        """Keep at most ``cap`` + 1 bytes of each response body from now on."""
        self.body_cap = cap
        self._pipe.set_body_cap(cap)

    def sweep(self, now: float) -> None:
        """Fail copies past their deadline, forget finished calls, close idle pipelined connections."""
        calls = self.calls
        if calls:
            for call in list(calls):
                if call.finished:
                    calls.discard(call)
                elif now >= call.deadline:
                    calls.discard(call)
                    call.expire(now)
        self._pipe.sweep(now)

    def close(self, abort: bool = False) -> None:
        """Take no more copies. In-flight ones finish (keep sweeping); with ``abort`` they are dropped."""
        self.closed = True
        if abort:
            for call in self.calls:
                call.cancel()
            self.calls.clear()
        self._pipe.close(abort=abort)


class _Fetched:
    """One copy sent through a `Fetcher`: what ``done`` receives from a `FetcherSender`."""

    __slots__ = ("error", "latency", "result", "tag")

    def __init__(self, tag: object) -> None:
        self.tag = tag
        self.result: tuple[int, Headers, bytes] | None = None
        self.error: UpstreamError | None = None
        self.latency: float | None = None


def _refuse(name: str, done: Done, tag: object) -> None:
    sent = _Fetched(tag)
    sent.error = UpstreamError("connect", f"shadow sender for upstream {name} is closed")
    done(sent)


class FetcherSender:
    """Copies through any `Fetcher`: each one a task under its deadline (``sweep`` has nothing to do)."""

    def __init__(self, fetcher: Fetcher, loop: asyncio.AbstractEventLoop, name: str = "") -> None:
        self.fetcher = fetcher
        self.name = name or getattr(fetcher, "name", type(fetcher).__name__)
        self.loop = loop
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()

    def send(
        self,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,  # a Fetcher sets its own Host
    ) -> None:
        """Send one request in a task; ``done`` runs when it ends, whichever way."""
        if self.closed:
            _refuse(self.name, done, tag)
            return
        sent = _Fetched(tag)
        # The loop keeps only weak references to tasks: hold them until they end.
        task = self.loop.create_task(self._fetch(sent, method, path_qs, headers, body, limit, done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send_get(
        self,
        target: bytes,
        header_block: bytes,
        limit: float,
        done: Done,
        tag: object = None,
        host: bytes | None = None,
        expect: Expected | None = None,
    ) -> None:
        """Send a GET without a body from header lines joined already (``expect`` unused: each is read)."""
        headers = header_pairs(header_block.split(b"\r\n")) if header_block else []
        self.send("GET", target.decode("utf-8"), headers, b"", limit, done, tag)

    async def _fetch(
        self,
        sent: _Fetched,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        limit: float,
        done: Done,
    ) -> None:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                sent.result = await self.fetcher.fetch(method, path_qs, headers, body, limit)
            sent.latency = time.perf_counter() - start
        except TimeoutError:
            sent.error = UpstreamError(
                "timeout", f"upstream {self.name} sent no complete response within {limit:g}s"
            )
        except UpstreamError as exc:
            sent.error = exc
        done(sent)

    def sweep(self, now: float) -> None:
        """Nothing to do: each copy's task has its own deadline."""

    def set_body_cap(self, cap: int) -> None:
        """Nothing to do: a `Fetcher` reads bodies its own way (the judge hashes what is over the cap)."""

    def close(self, abort: bool = False) -> None:
        """Take no more copies; with ``abort`` the ones in flight are cancelled without ``done``."""
        self.closed = True
        if abort:
            for task in self.tasks:
                task.cancel()
