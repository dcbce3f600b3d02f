"""The two halves of a pipelined shadow GET: `PipeCall` (the caller's handle) and `PipeConn` (a connection).

`proxy.upstream.pipe` explains the pipelining, its timing and its failure rules; `PipePool` there owns the
connections. A `PipeConn` is a `ResponseReader` (`proxy.http1.reader`): the framing rules are the ones
every upstream client uses.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Literal, cast

import httptools

from proxy.http1.capped import overflow, whole
from proxy.http1.errors import ProtocolError, UpstreamError
from proxy.http1.headers import Headers
from proxy.http1.reader import (
    READ_PLAIN,
    SAME_AT,
    SAME_PLAIN,
    ReadPlain,
    ResponseEvents,
    ResponseReader,
    protocol_error,
)

__all__ = ["Expected", "PipeCall", "PipeConn", "PipeOwner"]


class PipeOwner:
    """What calls and connections need from their `PipePool`, the one subclass.

    A base class here, not a Protocol: the pool's module imports this one, and compiled code reaches a
    Protocol's attributes and methods by name, a compiled base class's natively (per shadow GET: the
    clock, the flush of this loop iteration's requests).
    """

    def __init__(self, name: str, now: Callable[[], float], body_cap: int) -> None:
        self.name = name
        self.now = now  # the calls' start, deadline and answer times
        self.body_cap = body_cap  # bytes of a response body kept; the rest is hashed
        self.closed = False
        self.waiting: collections.deque[PipeCall] = collections.deque()  # every connection is full

    def _flush_soon(self, conn: PipeConn) -> None:
        """Have ``conn`` write its queued requests once this loop iteration's events are handled."""
        raise NotImplementedError

    def _discard(self, conn: PipeConn) -> None:
        """Forget a closed connection."""
        raise NotImplementedError

    def _resend(self, calls: list[PipeCall], written: bool = True) -> None:
        """Send again calls a closed connection did not answer (not ``written``: calls it never sent, which
        do not count as the one retry a call gets)."""
        raise NotImplementedError

    def _drain_waiting(self) -> None:
        """Send the waiting calls where there is room now."""
        raise NotImplementedError


class Expected:
    """The answer a call expects (a shadow copy's: its primary's answer, `proxy.server.exchange.Exchange`
    is one), so that an answer found to be it need not be read.

    ``response_raw``: its every byte (b"": not known), one whole response of the commonest shape with
    keep-alive; an answer that is those bytes is it. ``compared``: lower-case header names (None: only the
    bytes count); an answer of the commonest shape with keep-alive, ``status``, ``response_body`` and, for
    each of those names, the values of ``response_headers`` in their order, is it too: what
    `proxy.shadow.bytecheck.identical` would find identical.
    """

    __slots__ = ("compared", "response_body", "response_headers", "response_raw", "status")

    def __init__(self, status: int, response_headers: Headers, response_body: bytes | None,
                 response_raw: bytes = b"") -> None:  # fmt: skip
        self.status = status
        self.response_headers = response_headers
        self.response_body = response_body
        self.response_raw = response_raw
        self.compared: tuple[bytes, ...] | None = None


class PipeCall:
    """One shadow GET; ``done(call)`` runs once, with ``result`` or ``error`` set.

    ``started``, ``deadline`` and ``done_at`` are event-loop times. ``timed`` is true when the call went
    out on a connection with nothing ahead of it; ``started`` is then when it was sent (a re-sent call
    or one that waited for room does not count the wait), so that ``done_at - started`` is its own
    latency. The deadline counts from when the call was made.

    ``expect`` (None: none) is the answer the caller expects (`Expected`): when the answer is it, it is
    not read: ``done`` then runs with ``same`` true and neither ``result`` nor ``error`` set.
    """

    __slots__ = (
        "conn", "deadline", "done", "done_at", "error", "expect", "finished", "limit", "message", "pool",
        "result", "retried", "same", "started", "tag", "timed",
    )  # fmt: skip

    def __init__(
        self,
        pool: PipeOwner,
        message: bytes,
        limit: float,
        done: Callable[[PipeCall], None],
        now: float,
        tag: object = None,
        expect: Expected | None = None,
    ) -> None:
        self.pool = pool
        self.tag = tag  # the caller's
        self.message = message
        self.expect = expect
        self.limit = limit
        self.done = done
        self.started = now
        self.deadline = now + limit
        self.done_at = 0.0
        self.timed = False
        self.retried = False
        self.finished = False
        self.same = False
        self.conn: PipeConn | None = None
        self.result: tuple[int, Headers, bytes] | None = None
        self.error: UpstreamError | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from sending to the complete answer, for a timed call answered; else None."""
        return self.done_at - self.started if self.timed and (self.result is not None or self.same) else None

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

    def complete(self, result: tuple[int, Headers, bytes] | None, now: float) -> None:
        """The answer came in at ``now``: (status, headers, body), or None when it was ``expect``."""
        if self.finished:
            return  # expired while pipelined behind another call: the answer came too late
        self.finished = True
        self.conn = None
        self.done_at = now
        if result is None:
            self.same = True
        else:
            self.result = result
        self.done(self)

    def fail(self, error: UpstreamError) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn = None
        self.error = error
        self.done(self)


class PipeConn(ResponseReader[ResponseEvents], asyncio.Protocol):
    """One upstream connection carrying pipelined GETs, answered in the order they were sent.

    Its reader has no sink: the head stays in the reader's fields and `on_body` collects the body, so
    a response costs no call beyond the parser's own callbacks. A body keeps at most the pool's
    ``body_cap`` + 1 bytes; past that it is hashed (`proxy.http1.capped`).

    Between responses, a read goes first to `READ_PLAIN` (compiled build): the answers it holds whole and
    in the commonest shape (Content-Length framing, a body within the cap, nothing llhttp would have to
    decide) are read in one C pass with no callback each; the first one it does not take, and every byte
    after it, goes to llhttp as before. ``got_bytes`` tells whether llhttp is inside a response.
    """

    __slots__ = (
        "_pop", "_push", "body", "body_size", "cap", "closed", "got_bytes", "hasher", "idle_since",
        "inflight", "now", "pool", "queued", "read_at", "served", "transport", "waiting",
    )  # fmt: skip

    # Shadow results have no reason phrase: without this callback llhttp makes one call less a response.
    on_status = None  # type: ignore[assignment]  # httptools skips a callback that is None

    def __init__(self, pool: PipeOwner) -> None:
        super().__init__()
        self.pool = pool
        self.now = pool.now  # read per call and answer: held here, one attribute read less each
        self.waiting = pool.waiting
        self.transport: asyncio.Transport | None = None
        self.inflight: collections.deque[PipeCall] = collections.deque()  # never replaced, so:
        self._push = self.inflight.append  # bound once: compiled code calls a deque's methods by name
        self._pop = self.inflight.popleft
        self.queued: list[bytes] = []  # requests waiting for the connection to open
        self.body: list[bytes] = []
        self.body_size = 0
        self.cap = pool.body_cap
        self.hasher: Any = None  # the running sha256 of a body past the cap
        self.got_bytes = False  # llhttp is inside a response (from on_message_begin to on_message_complete)
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
            call.started = self.now()
        self._push(call)
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
        if len(self.inflight) <= len(self.queued):  # bytes nobody asked for: the upstream is confused
            self._stray()
            return
        self.read_at = self.now()
        read_plain = READ_PLAIN
        if read_plain is not None and not self.got_bytes:  # llhttp is between responses
            try:
                taken = self._take_plain(data, read_plain)
            except Exception as e:  # a caller's done failed: as when it fails inside llhttp's callback
                self._broken(f"sent an invalid response: {protocol_error(e)}")
                return
            if taken != 0:
                if taken == len(data) or self.closed:
                    return
                data = data[taken:]
        # got_bytes: set by on_message_begin, once llhttp starts a response (not for CRLFs between them)
        try:  # ResponseReader.feed, inlined: one call less per read (a 101 is refused by the reader)
            self._feed(data)
        except httptools.HttpParserError as e:
            self._broken(f"sent an invalid response: {protocol_error(e)}")

    def _take_plain(self, data: bytes, read_plain: ReadPlain) -> int:
        """Complete the calls whose answers ``data`` holds whole and plain, in order; return the offset
        after the last one taken (0: none). An answer that is its call's ``expect`` is not read: its bytes
        are compared in place (they are one whole plain keep-alive response, so it ends where they do), or
        else its status, body and compared headers, scanned in place."""
        taken = 0
        cap = self.cap
        same_at = SAME_AT
        same_plain = SAME_PLAIN
        while len(self.inflight) > len(self.queued) and not self.closed:  # an answer is due: see _stray
            expect = self.inflight[0].expect
            if expect is not None and same_at is not None and same_plain is not None:
                raw = expect.response_raw
                if len(raw) != 0 and same_at(data, taken, raw):
                    taken += len(raw)
                    self._answered(None, True)
                    continue
                names = expect.compared
                body = expect.response_body
                if names is not None and body is not None:
                    end = same_plain(data, taken, cap, expect.status, body, names, expect.response_headers)
                    if end is None:  # not plain: llhttp's
                        break
                    if end != 0:
                        taken = end
                        self._answered(None, True)
                        continue
            plain = read_plain(data, taken, cap)
            if plain is None:
                break
            status, _, headers, body, keep_alive, taken = plain  # shadow results have no reason phrase
            self._answered((status, headers, body), keep_alive)
        return taken

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
        if self.ends_at_close():  # a body delimited by the connection's end ends here
            head.complete((self.status, self.headers, self._take_body()), self.pool.now())
        elif self.got_bytes:
            head.fail(UpstreamError("protocol", f"upstream {name} closed the connection mid-response"))
        elif self.served and not head.retried:  # a reused connection closed unanswered: the keep-alive race
            rest.insert(0, head)
        else:
            head.fail(UpstreamError("connect", f"upstream {name} closed the connection without answering"))
        self.pool._resend(rest)

    # --- the reader's events
    def on_message_begin(self) -> None:
        if len(self.inflight) <= len(self.queued):
            self._stray()
            raise ProtocolError("a response nobody asked for")  # llhttp reads no further
        self.got_bytes = True  # llhttp is inside a response until its on_message_complete

    def on_body(self, body: bytes) -> None:
        hasher = self.hasher
        if hasher is not None:  # past the cap: hashed, not kept
            hasher.update(body)
            self.body_size += len(body)
            return
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > self.cap:
            self.hasher = overflow(self.body, self.cap)

    def on_message_complete(self) -> None:
        # The reader's on_message_complete with the end of a final response inlined: every shadow GET
        # ends here, and this saves it a call. What is not a final response goes to the reader's rules.
        if self.in_interim or not self.got_head:
            ResponseReader.on_message_complete(self)
            return
        headers = self.headers
        self.headers = []  # the reader's reset for the next response (no reason phrase: on_status is off)
        self.got_head = False
        inflight = self.inflight
        if not inflight:
            raise ProtocolError("one response more than requests sent")
        chunks = self.body
        if self.hasher is None:
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        else:
            body = whole(chunks, self.hasher, self.body_size)
            self.hasher = None
        self.body = []
        self.body_size = 0
        self.got_bytes = False
        self._answered((self.status, headers, body), self._keep_alive())

    def _answered(self, result: tuple[int, Headers, bytes] | None, keep_alive: bool) -> None:
        """The head call's answer is complete: read by llhttp or `READ_PLAIN`, or None: its ``expect``."""
        call = self._pop()
        self.served += 1
        now = self.read_at
        if not keep_alive:
            self._retire()
        elif not self.inflight:
            self.idle_since = now
            if self.pool.closed:
                self._retire()
        call.complete(result, now)
        if self.waiting:
            self.pool._drain_waiting()

    def _message_end(self, status: int, headers: Headers, keep_alive: bool) -> None:
        # The reader calls this only to end the answer to a HEAD by hand, and HEADs are not pipelined.
        raise ProtocolError("a pipelined connection cannot end a response before its body")

    # --- internals
    def _take_body(self) -> bytes:
        body = whole(self.body, self.hasher, self.body_size)
        self.body, self.body_size, self.hasher = [], 0, None
        return body

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

    def _stray(self) -> None:
        """Bytes while no call written is waiting for its answer (``queued`` are the calls not written
        yet; a done sends one while the read that answered the last one is parsed): the upstream sent
        more responses than it was asked for. The connection is closed, not read on: its bytes would be
        taken for the next call's answer. The calls queued on it were never sent: they go elsewhere."""
        self.pool._resend(self._shut("abort"), written=False)

    def _broken(self, why: str) -> None:
        if self.closed:  # already shut (`_stray` stops llhttp so)
            return
        calls = self._shut("abort")
        if calls:
            calls[0].fail(UpstreamError("protocol", f"upstream {self.pool.name} {why}"))
            self.pool._resend(calls[1:])
