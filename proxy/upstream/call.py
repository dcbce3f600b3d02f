"""One buffered shadow request on an `UpstreamPool`, finished by a callback instead of an awaited future.

`UpstreamPool.fetch` costs a coroutine, a future, an ``asyncio.timeout_at`` and a task wake-up per call;
shadowing makes one such call for every sampled request, so it uses this instead. It runs on the pool's
public pieces (``acquire``/``connect``, ``UpConn.start``, the `ResponseSink` callbacks) with the same
behaviour as `proxy.fetch.fetch`: framing headers are set here, a GET/HEAD/OPTIONS whose pooled connection
dies before any response byte is retried once on a new connection, and the whole call has one deadline.
The deadline is enforced by whoever owns the calls (`proxy.shadow.Shadower` sweeps its in-flight calls
with `expire`), so an ordinary call creates no timer handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proxy.http1.capped import NO_CAP, overflow, whole
from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers
from proxy.upstream.conn import ConnSource, ResponseSink, UpConn
from proxy.upstream.request import IDEMPOTENT, build_request

__all__ = ["Call", "build_request"]  # the builder is re-exported: shadowing imports it from here


class Call(ResponseSink):
    """A request in flight; ``done(call)`` runs once, with ``result`` or ``error`` set.

    ``started`` and ``done_at`` are event-loop times; ``tag`` is the caller's (as for `PipeCall`).
    """

    __slots__ = (
        "_body", "_conn", "_done", "_hasher", "_headers", "_loop", "_retried", "_size", "_status", "_task",
        "body_cap", "deadline", "done_at", "error", "finished", "idempotent", "is_head", "limit", "message",
        "pool", "result", "started", "tag",
    )  # fmt: skip

    def __init__(
        self,
        pool: ConnSource,
        method: str,
        message: bytes,
        limit: float,
        done: Callable[[Call], None],
        loop: asyncio.AbstractEventLoop | None = None,
        tag: object = None,
        body_cap: int = NO_CAP,
    ) -> None:
        self.pool = pool
        self.body_cap = body_cap  # bytes of the body kept; past them it is hashed (proxy.http1.capped)
        self.tag = tag
        self.message = message
        verb = method.upper().encode("ascii")
        self.is_head = verb == b"HEAD"
        self.idempotent = verb in IDEMPOTENT
        self.limit = limit
        self._done = done
        # get_running_loop() costs a getpid() syscall in 3.11: callers that have the loop pass it.
        self._loop = asyncio.get_running_loop() if loop is None else loop
        self.started = self._loop.time()
        self.deadline = self.started + limit
        self.done_at = 0.0
        self.finished = False
        self.result: tuple[int, Headers, bytes] | None = None
        self.error: UpstreamError | None = None
        self._conn: UpConn | None = None
        self._task: asyncio.Task[None] | None = None
        self._retried = False
        self._status = 0
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._size = 0
        self._hasher: Any = None

    @property
    def latency(self) -> float | None:
        """Seconds from the call's start (connecting included) to its complete answer; None on error."""
        return self.done_at - self.started if self.result is not None else None

    def begin(self) -> None:
        """Send on an idle connection now, or open one first (a task only in that case)."""
        conn = self.pool.acquire()
        if conn is None:
            self._task = self._loop.create_task(self._connect())
        else:
            self._send(conn)

    def expire(self, now: float) -> bool:
        """Fail the call with a timeout if its deadline has passed; True when it did."""
        if self.finished or now < self.deadline:
            return False
        self._abandon()
        message = f"upstream {self.pool.name} sent no complete response within {self.limit:g}s"
        self._finish(None, UpstreamError("timeout", message))
        return True

    def cancel(self) -> None:
        """Give up without calling ``done`` (shutdown): the connection is closed, not reused."""
        self.finished = True
        self._abandon()

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.sink is self:
            conn.detach()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _connect(self) -> None:
        try:
            conn = await self.pool.connect(max(0.0, self.deadline - self._loop.time()))
        except UpstreamError as exc:
            self._task = None
            self._finish(None, exc)
            return
        self._task = None
        if self.finished:
            conn.abort()
            return
        self._send(conn)

    def _send(self, conn: UpConn) -> None:
        self._conn = conn
        remaining = max(0.0, self.deadline - self._loop.time())
        conn.start(self, self.message, self.is_head, True, False)
        conn.timeout = remaining
        conn.deadline = self.pool.clock + remaining

    def _finish(self, result: tuple[int, Headers, bytes] | None, error: UpstreamError | None) -> None:
        if self.finished:
            return
        self.finished = True
        self._conn = None
        self.done_at = self._loop.time()
        self.result = result
        self.error = error
        self._done(self)

    # -- ResponseSink ---------------------------------------------------------------------------------

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        """1xx: nothing to keep."""

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        """Keep the status and headers."""
        self._status = status
        self._headers = list(headers)

    def on_resp_body(self, chunk: bytes) -> None:
        """Keep a body chunk (up to the cap; past it, hash it)."""
        self._size += len(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)
            return
        self._body.append(chunk)
        if self._size > self.body_cap:
            self._hasher = overflow(self._body, self.body_cap)

    def on_resp_done(self) -> None:
        """The response is complete (the pool takes the connection back)."""
        self._finish((self._status, self._headers, whole(self._body, self._hasher, self._size)), None)

    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None:
        """Retry once on a new connection when that is safe, else fail."""
        if self.finished:
            return
        if retryable and self.idempotent and not self._retried:
            self._retried = True
            self._conn = None
            self._status, self._headers, self._body, self._size, self._hasher = 0, [], [], 0, None
            self.begin()
            return
        self._finish(None, exc)

    def on_upgrade(self, conn: UpConn, rest: bytes) -> None:
        """A shadow call never asks for an upgrade: an upstream that switches protocols failed it."""
        conn.detach()
        self._finish(None, UpstreamError("protocol", f"upstream {self.pool.name} switched protocols"))

    def on_tunnel_data(self, data: bytes) -> None:
        """Not used (no tunnels)."""

    def on_tunnel_closed(self) -> None:
        """Not used (no tunnels)."""

    def flush(self) -> None:
        """Nothing buffered for a client."""

    def up_pause_writing(self) -> None:
        """Requests are small and written once."""

    def up_resume_writing(self) -> None:
        """Requests are small and written once."""
