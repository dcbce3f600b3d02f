"""Pipelined shadow connections: the shadow copies of many reads share a few upstream connections.

A shadow copy costs the gateway a second upstream exchange, and on its own connection that is a write
and a read system call and their event-loop wake-ups for every copy: as much kernel work as the primary
request itself. GETs without a body are idempotent, so this pool *pipelines* them (RFC 9112, 9.3.2): a
connection carries up to ``depth`` requests in flight and the upstream answers them in order. The
copies made in one event-loop iteration go on one connection; uvloop sends them with one ``writev``
and their responses usually come back in one read. Under light load every copy finds an idle
connection of its own, as before.

Timing. A request pipelined behind others waits for them, so only a call sent on a connection with
nothing in flight is *timed* (`PipeCall.timed`); the others are compared but their latency is not
recorded. (An upstream that coalesces its own writes, as uvloop does, may send the first answer of a
batch only once the whole batch is answered: for in-memory handlers that is microseconds.)

Failures. When a connection closes or sends bytes that do not parse, the call at its head fails as a
single call would (one retry when a reused connection closed before answering: the keep-alive race);
the calls behind it never got an answer and are sent again once on another connection. A response that
ends the connection (``Connection: close``, or a body delimited by the close) completes its call; the
calls behind it are sent again. When the call at the head of a connection passes its deadline the
connection is closed and the calls behind it are sent again. Deadlines need no timer per call: the
owner calls `PipePool.sweep` periodically (`proxy.shadow.Shadower` does, every 0.1 s).

Expected answers. A call may carry the answer its caller expects (``expect``, an `Expected`: a shadow copy's
primary answer); between responses, the connection compares the next answer with it in place (its bytes, or
its status, body and compared headers, without making objects of them) and, when it is the same, completes
the call without reading it (``same``; see `PipeCall`).

Only GETs without a body are pipelined (a HEAD answer's missing body cannot be told to llhttp in the
middle of a pipeline); everything else goes through `proxy.upstream.call.Call` on an `UpstreamPool`.
Responses are read by the one response reader (`proxy.http1.reader`), connections opened by the one
connect (`proxy.upstream.connect`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.http1.capped import NO_CAP
from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec
from proxy.upstream.connect import open_connection, tls_context
from proxy.upstream.pipeconn import Expected, PipeCall, PipeConn, PipeOwner

__all__ = ["DEPTH", "Expected", "PipeCall", "PipeConn", "PipePool"]  # re-exported: the call, connection...

DEPTH = 16  # requests in flight per connection at most
IDLE_TIMEOUT = 4.0  # below Node's 5 s keepAliveTimeout, so the upstream rarely closes under us


class PipePool(PipeOwner):
    """Pipelined connections to one upstream: at most ``max_conns`` of them, ``depth`` calls each.

    ``clock`` (seconds, monotonic; default the event loop's time) stamps the calls' start, deadline and
    answer times; the owner passes the same clock's time to `sweep`.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        loop: asyncio.AbstractEventLoop,
        *,
        max_conns: int = 8,
        depth: int = DEPTH,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] | None = None,
        body_cap: int = NO_CAP,
    ) -> None:
        # The calls' start, deadline and answer times: the loop's, or a clock a test moves by hand. The
        # body cap: bytes of a response body kept, the rest hashed (`set_body_cap`).
        super().__init__(spec.name, loop.time if clock is None else clock, body_cap)
        self.spec = spec
        self.loop = loop
        self.max_conns = max(1, max_conns)
        self.depth = max(1, depth)
        self.idle_timeout = idle_timeout
        self.conns: list[PipeConn] = []
        self._next = self._next_iteration  # the bound method made once, not per batch
        self._filling: PipeConn | None = None  # this loop iteration's connection
        self._flushing: list[PipeConn] = []  # connections with requests queued in this iteration
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl = tls_context(spec)

    def __repr__(self) -> str:
        return f"<PipePool {self.name} {self.spec.url} conns={len(self.conns)} waiting={len(self.waiting)}>"

    def call(
        self, message: bytes, limit: float, done: Callable[[PipeCall], None], tag: object = None,
        expect: Expected | None = None,
    ) -> PipeCall:  # fmt: skip
        """Start one GET (``message`` is the whole request); ``done(call)`` runs once, when it ends.

        Deadlines are enforced by `sweep`, which the owner calls periodically. ``expect``: see `PipeCall`.
        """
        call = PipeCall(self, message, limit, done, self.now(), tag, expect)
        self._send(call)
        return call

    def set_body_cap(self, cap: int) -> None:
        """Keep at most ``cap`` + 1 bytes of each body from now on (open connections adopt it too)."""
        self.body_cap = cap
        for conn in self.conns:
            conn.cap = cap

    def sweep(self, now: float) -> None:
        """Fail calls past their deadline; close connections idle for longer than the idle timeout.

        The owner calls this periodically: its period is the precision of the deadlines.
        """
        for conn in list(self.conns):
            late = [c for c in conn.inflight if c.deadline <= now and not c.finished]
            for call in late:
                call.expire(now)
        for call in [c for c in self.waiting if c.deadline <= now]:
            call.expire(now)
        expired = now - self.idle_timeout
        for conn in [c for c in self.conns if not c.inflight and c.transport is not None]:
            if conn.idle_since <= expired:
                conn._shut("close")

    def close(self, abort: bool = False) -> None:
        """Take no more calls. Idle connections close now and busy ones after their last answer; with
        ``abort`` (shutdown, after the owner cancelled its calls) every connection closes now."""
        self.closed = True
        for call in self.waiting:
            call.fail(UpstreamError("connect", f"shadow pool for upstream {self.name} was closed"))
        self.waiting.clear()
        for conn in list(self.conns):
            if abort or not conn.inflight:
                for call in conn._shut("abort"):
                    call.cancel()
        if abort:
            for task in self._tasks:
                task.cancel()

    # --- internals
    def _send(self, call: PipeCall) -> None:
        if self.closed:
            call.fail(UpstreamError("connect", f"shadow pool for upstream {self.name} is closed"))
            return
        conn = self._filling
        if conn is None or conn.closed or len(conn.inflight) >= self.depth:
            conn = self._pick()
            if conn is None:
                self.waiting.append(call)
                return
            self._filling = conn
        conn.send(call)

    def _pick(self) -> PipeConn | None:
        # An idle connection, else a new one, else the least busy one with room.
        best: PipeConn | None = None
        for conn in self.conns:
            if conn.closed:
                continue
            n = len(conn.inflight)
            if n == 0:
                return conn
            if n < self.depth and (best is None or n < len(best.inflight)):
                best = conn
        if len(self.conns) < self.max_conns:
            return self._open()
        return best

    def _open(self) -> PipeConn:
        conn = PipeConn(self)
        self.conns.append(conn)
        task = self.loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _connect(self, conn: PipeConn) -> None:
        try:
            await open_connection(self.loop, lambda: conn, self.spec, self._ssl, self.spec.connect_timeout)
        except UpstreamError as error:
            conn.closed = True
            self._discard(conn)
            calls = list(conn.inflight)
            conn.inflight.clear()
            for call in calls:
                call.fail(error)

    def _flush_soon(self, conn: PipeConn) -> None:
        flushing = self._flushing
        if not flushing:
            self.loop.call_soon(self._next)
        if conn not in flushing:
            flushing.append(conn)

    def _next_iteration(self) -> None:
        # Runs once the event loop has handled every event of this iteration, before it polls again.
        self._filling = None
        flushing = self._flushing
        self._flushing = []
        for conn in flushing:
            conn.flush()

    def _discard(self, conn: PipeConn) -> None:
        if self._filling is conn:
            self._filling = None
        try:
            self.conns.remove(conn)
        except ValueError:
            pass
        self._drain_waiting()

    def _resend(self, calls: list[PipeCall], written: bool = True) -> None:
        for call in calls:
            if call.finished:
                continue
            call.conn = None
            if not written:
                self._send(call)
            elif call.retried:
                call.fail(UpstreamError("connect", f"upstream {self.name} closed the connection twice"))
            else:
                call.retried = True
                self._send(call)
        self._drain_waiting()

    def _drain_waiting(self) -> None:
        waiting = self.waiting
        while waiting:
            call = waiting[0]
            if call.finished:
                waiting.popleft()
                continue
            conn = self._pick()
            if conn is None:
                return
            waiting.popleft()
            conn.send(call)
