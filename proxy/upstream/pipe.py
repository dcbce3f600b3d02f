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

Only GETs without a body are pipelined (a HEAD answer's missing body cannot be told to llhttp in the
middle of a pipeline); everything else goes through `proxy.shadowcall.Call` on an `UpstreamPool`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Literal, cast

import httptools

from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec

__all__ = ["DEPTH", "PipeCall", "PipeConn", "PipePool"]

Headers = list[tuple[bytes, bytes]]

DEPTH = 16  # requests in flight per connection at most
IDLE_TIMEOUT = 4.0  # below Node's 5 s keepAliveTimeout, so the upstream rarely closes under us


class PipeCall:
    """One shadow GET; ``done(call)`` runs once, with ``result`` or ``error`` set.

    ``started``, ``deadline`` and ``done_at`` are event-loop times. ``timed`` is true when the call went
    out on a connection with nothing ahead of it; ``started`` is then when it was sent (a re-sent call
    or one that waited for room does not count the wait), so that ``done_at - started`` is its own
    latency. The deadline counts from when the call was made.
    """

    __slots__ = (
        "conn", "deadline", "done", "done_at", "error", "finished", "limit", "message", "pool", "result",
        "retried", "started", "tag", "timed",
    )  # fmt: skip

    def __init__(
        self,
        pool: PipePool,
        message: bytes,
        limit: float,
        done: Callable[[PipeCall], None],
        now: float,
        tag: object = None,
    ) -> None:
        self.pool = pool
        self.tag = tag  # the caller's
        self.message = message
        self.limit = limit
        self.done = done
        self.started = now
        self.deadline = now + limit
        self.done_at = 0.0
        self.timed = False
        self.retried = False
        self.finished = False
        self.conn: PipeConn | None = None
        self.result: tuple[int, Headers, bytes] | None = None
        self.error: UpstreamError | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from sending to the complete answer, for a timed call with a result; else None."""
        return self.done_at - self.started if self.timed and self.result is not None else None

    def expire(self, now: float) -> bool:
        """Fail the call with a timeout if its deadline has passed; True when it did."""
        if self.finished or now < self.deadline:
            return False
        conn = self.conn
        if conn is not None and conn.inflight and conn.inflight[0] is self:
            conn.abandon()  # its answer is not coming in time, and the others wait behind it
        message = f"upstream {self.pool.name} sent no complete response within {self.limit:g}s"
        self.fail(UpstreamError("timeout", message))
        return True

    def cancel(self) -> None:
        """Give up without calling ``done`` (shutdown)."""
        self.finished = True

    def complete(self, status: int, headers: Headers, body: list[bytes], now: float) -> None:
        if self.finished:
            return  # expired while pipelined behind another call: the answer came too late
        self.finished = True
        self.conn = None
        self.done_at = now
        self.result = (status, headers, body[0] if len(body) == 1 else b"".join(body))
        self.done(self)

    def fail(self, error: UpstreamError) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn = None
        self.error = error
        self.done(self)


class _BadResponse(Exception):
    """Raised inside a parser callback; surfaces as an HttpParserError (-> protocol error)."""


class PipeConn(asyncio.Protocol):
    """One upstream connection carrying pipelined GETs, answered in the order they were sent."""

    __slots__ = (
        "body", "closed", "got_bytes", "got_head", "headers", "idle_since", "in_interim", "inflight",
        "parser", "pool", "queued", "read_at", "served", "status", "transport",
    )  # fmt: skip

    def __init__(self, pool: PipePool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.inflight: collections.deque[PipeCall] = collections.deque()
        self.queued: list[bytes] = []  # requests waiting for the connection to open
        self.status = 0
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.in_interim = False
        self.got_head = False
        self.got_bytes = False  # bytes of the head call's response have arrived
        self.closed = False
        self.served = 0  # responses completed on this connection
        self.idle_since = 0.0
        self.read_at = 0.0  # when the bytes being parsed arrived: the end time of what they complete

    def send(self, call: PipeCall) -> None:
        """Queue a call; its bytes go out with the rest of this iteration's (`flush`)."""
        call.conn = self
        if self.inflight:
            call.timed = False
        else:  # nothing ahead of it: timed from now (a re-sent or waiting call has waited for others)
            call.timed = True
            call.started = self.pool.now()
        self.inflight.append(call)
        self.queued.append(call.message)
        self.pool._flush_soon(self)

    def flush(self) -> None:
        """Write the queued requests at once (uvloop sends each ``write`` right away: one system call)."""
        queued = self.queued
        if queued and self.transport is not None and not self.closed:
            self.transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
            self.queued = []

    def abandon(self) -> None:
        """Close now; the calls behind the head one are sent again (the head one is the caller's)."""
        if self.closed:
            return
        self.pool._resend(self._shut("abort")[1:])

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.closed:  # the pool closed, or the calls expired, while connecting
            t.abort()
        elif self.queued:
            t.write(b"".join(self.queued))
            self.queued = []

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.inflight:  # bytes nobody asked for: the upstream is confused
            self._broken("sent bytes with no request outstanding")
            return
        self.got_bytes = True
        self.read_at = self.pool.now()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._broken(f"sent an invalid response: {e}")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        calls = self._shut("gone")
        if not calls:
            return
        head, rest = calls[0], calls[1:]
        name = self.pool.name
        if self.got_head and self._eof_delimited():  # a body delimited by the connection's end ends here
            head.complete(self.status, self.headers, self.body, self.pool.now())
        elif self.got_bytes:
            head.fail(UpstreamError("protocol", f"upstream {name} closed the connection mid-response"))
        elif self.served and not head.retried:  # a reused connection closed unanswered: the keep-alive race
            rest.insert(0, head)
        else:
            head.fail(UpstreamError("connect", f"upstream {name} closed the connection without answering"))
        self.pool._resend(rest)

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.got_head:  # after the head: trailers, which are not compared
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _BadResponse("101 Switching Protocols to a request that did not ask to upgrade")
            self.in_interim = True
            return
        self.status = status
        self.got_head = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        headers = self.headers
        self.headers = []
        if self.in_interim:
            self.in_interim = False
            return
        inflight = self.inflight
        if not inflight:
            raise _BadResponse("one response more than requests sent")
        call = inflight.popleft()
        body = self.body
        self.body = []
        self.got_head = self.got_bytes = False
        self.served += 1
        now = self.read_at
        if not self.parser.should_keep_alive():
            self._retire()
        elif not inflight:
            self.idle_since = now
            if self.pool.closed:
                self._retire()
        call.complete(self.status, headers, body, now)
        if self.pool.waiting:
            self.pool._drain_waiting()

    # --- internals
    def _shut(self, how: Literal["close", "abort", "gone"]) -> list[PipeCall]:
        """Leave the pool and close the transport (``gone``: it already is); return the calls that were
        in flight, in order, for the caller to complete, fail or send again."""
        self.closed = True
        self.pool._discard(self)
        calls = list(self.inflight)
        self.inflight.clear()
        transport = self.transport
        if transport is not None:
            if how == "abort":
                transport.abort()
            elif how == "close":
                transport.close()
        return calls

    def _retire(self) -> None:
        # The upstream ends the connection after this response: what is behind it goes elsewhere.
        self.pool._resend(self._shut("close"))

    def _broken(self, why: str) -> None:
        calls = self._shut("abort")
        if calls:
            calls[0].fail(UpstreamError("protocol", f"upstream {self.pool.name} {why}"))
            self.pool._resend(calls[1:])

    def _eof_delimited(self) -> bool:
        status = self.status
        if status in (204, 304):
            return False
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                return False
            if lname == b"transfer-encoding" and value.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
                return False
        return True


class PipePool:
    """Pipelined connections to one upstream: at most ``max_conns`` of them, ``depth`` calls each."""

    def __init__(
        self,
        spec: UpstreamSpec,
        loop: asyncio.AbstractEventLoop,
        *,
        max_conns: int = 8,
        depth: int = DEPTH,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.loop = loop
        self.now = loop.time
        self.max_conns = max(1, max_conns)
        self.depth = max(1, depth)
        self.idle_timeout = idle_timeout
        self.conns: list[PipeConn] = []
        self.waiting: collections.deque[PipeCall] = collections.deque()  # every connection is full
        self.closed = False
        self._filling: PipeConn | None = None  # this loop iteration's connection
        self._flushing: list[PipeConn] = []  # connections with requests queued in this iteration
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if spec.scheme == "https" else None

    def __repr__(self) -> str:
        return f"<PipePool {self.name} {self.spec.url} conns={len(self.conns)} waiting={len(self.waiting)}>"

    def call(
        self, message: bytes, limit: float, done: Callable[[PipeCall], None], tag: object = None
    ) -> PipeCall:
        """Start one GET (``message`` is the whole request); ``done(call)`` runs once, when it ends.

        Deadlines are enforced by `sweep`, which the owner calls periodically.
        """
        call = PipeCall(self, message, limit, done, self.now(), tag)
        self._send(call)
        return call

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
        spec = self.spec
        limit = spec.connect_timeout
        error: UpstreamError | None = None
        try:
            async with asyncio.timeout(limit):
                await self.loop.create_connection(
                    lambda: conn,
                    spec.host,
                    spec.port,
                    ssl=self._ssl,
                    server_hostname=spec.host if self._ssl else None,
                )
        except TimeoutError:
            error = UpstreamError("timeout", f"connecting to upstream {self.name} took over {limit:g}s")
        except OSError as e:
            error = UpstreamError("connect", f"cannot connect to upstream {self.name}: {e.strerror or e}")
        if error is None:
            return
        conn.closed = True
        self._discard(conn)
        calls = list(conn.inflight)
        conn.inflight.clear()
        for call in calls:
            call.fail(error)

    def _flush_soon(self, conn: PipeConn) -> None:
        flushing = self._flushing
        if not flushing:
            self.loop.call_soon(self._next_iteration)
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

    def _resend(self, calls: list[PipeCall]) -> None:
        for call in calls:
            if call.finished:
                continue
            call.conn = None
            if call.retried:
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
