"""`UpConn`: one pooled keep-alive connection to an upstream, streaming each response to a sink.

The connection is an asyncio Protocol and a `ResponseReader` (the framing rules live there): a parser
callback reaches the sink (`ResponseSink`, implemented by the client connection and by the buffered
calls) with no call in between. It carries one request at a time, then returns to its owner, an
`UpstreamPool`, which enforces deadlines by sweeping (`deadline`, `last_io`, `timeout` are its fields).
`ConnSource` is what the buffered calls need from a pool.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from proxy.compiled import mypyc_attr
from proxy.http1.errors import ProtocolError, UpstreamError
from proxy.http1.headers import Headers
from proxy.http1.reader import READ_PLAIN, ResponseEvents, ResponseReader, protocol_error

__all__ = ["ConnOwner", "ConnSource", "ResponseSink", "UpConn", "unconnected"]

log = logging.getLogger("strangler.upstream")


def unconnected(data: bytes) -> None:
    """The write of a connection whose transport is not there yet (a bug if ever called)."""
    raise RuntimeError("written to before the connection was made")


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; the buffered calls subclass it in Python
class ResponseSink(ResponseEvents):
    """Receives one response from an `UpConn` (the client connection and the buffered calls subclass it).

    A base class rather than a Protocol so that the compiled connection calls a compiled sink natively.
    """

    def on_resp_done(self) -> None:
        raise NotImplementedError

    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None:
        raise NotImplementedError

    def on_upgrade(self, conn: UpConn, rest: bytes) -> None:
        raise NotImplementedError

    def on_tunnel_data(self, data: bytes) -> None:
        raise NotImplementedError

    def on_tunnel_closed(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def up_pause_writing(self) -> None:
        raise NotImplementedError

    def up_resume_writing(self) -> None:
        raise NotImplementedError


class ConnOwner:
    """What an `UpConn` needs from its pool: its name, coarse clock, active set and the way back.

    `proxy.upstream.pool.UpstreamPool` is the one subclass; a base class here (not a Protocol) so that a
    connection reads these fields and calls `_release` natively, without importing the pool's module.
    """

    def __init__(self, name: str, total_timeout: float) -> None:
        self.name = name
        self.clock = 0.0  # coarse loop time, refreshed by the owner's sweep
        self.total_timeout = total_timeout
        self.active: set[UpConn] = set()

    def _release(self, conn: UpConn) -> None:
        raise NotImplementedError


class ConnSource(Protocol):
    """What a buffered call needs from a pool: connections, its clock, and where requests go."""

    name: str
    clock: float

    @property
    def base_path(self) -> bytes: ...
    @property
    def hostport(self) -> bytes: ...
    def acquire(self) -> UpConn | None: ...
    async def connect(self, limit: float | None = None) -> UpConn: ...


class UpConn(ResponseReader[ResponseSink], asyncio.Protocol):
    """One upstream connection; carries one request at a time, then returns to its pool."""

    __slots__ = (
        "_write",
        "closed",
        "deadline",
        "ended",
        "feeding",
        "got_bytes",
        "idle_since",
        "last_io",
        "paused",
        "pool",
        "raw",
        "req_done",
        "reused",
        "stray",
        "timeout",
        "transport",
    )

    def __init__(self, pool: ConnOwner) -> None:
        super().__init__()
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], None] = unconnected
        self.got_bytes = False
        # While llhttp parses a read, a response that ends in it goes back to the pool only after the
        # read, and only if nothing followed it there (``stray``), and its sink's end waits till then
        # (``ended``): see `_fed`.
        self.feeding = False
        self.ended: ResponseSink | None = None
        self.stray = False
        self.paused = False  # our reading is paused (`pause_reading`): its client is slow
        # While `_plain` hands a sink a keep-alive response that was one whole read: that read, the
        # response's every byte (a shadow copy's answer is compared with it as is). b"" otherwise.
        self.raw = b""
        self.reused = False
        self.closed = False
        self.req_done = True
        self.idle_since = 0.0
        self.last_io = 0.0
        self.deadline = 0.0
        self.timeout = 0.0

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._write = self.transport.write  # bound once, as the reader's parser methods

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel:
            if sink is not None:
                sink.on_tunnel_data(data)
            return
        if sink is None:  # bytes on an idle connection: the upstream is confused, do not reuse
            self.abort()
            return
        self.last_io = self.pool.clock
        read_plain = READ_PLAIN
        if read_plain is not None and not self.got_bytes and not self.is_head and not self.upgrade_ok:
            # The response's first read: when it is the whole response and plain, no llhttp.
            plain = read_plain(data, 0, sys.maxsize)
            if plain is not None and plain[5] == len(data):
                self.got_bytes = True
                status, reason, headers, body, keep_alive, _ = plain
                if keep_alive:
                    self.raw = data
                try:
                    self._plain(sink, status, reason, headers, body, keep_alive)
                except Exception as e:  # as a callback's exception inside llhttp would end
                    self._invalid(protocol_error(e))
                self.raw = b""
                return  # (no flush: the response's end wrote it; a sink here now is the next request's)
        self.got_bytes = True
        self.feeding = True
        try:  # ResponseReader.feed, inlined: one call less per read
            self._feed(data)
        except httptools.HttpParserUpgrade as e:
            self._fed(False)
            self._upgrade(data[e.args[0] :])
            return
        except httptools.HttpParserError as e:
            self._fed(False)
            self._invalid(protocol_error(e))
            return
        sink = self.sink  # the one mid-response, if any (not the next request's, which `_fed` may start)
        self._fed(True)
        if sink is not None:
            sink.flush()

    def eof_received(self) -> bool:
        return False  # close our side too: HTTP/1.1 upstreams do not half-close

    # --- httptools callbacks: what tells bytes after the response's end in its read
    def on_message_begin(self) -> None:
        if self.sink is None:  # a second response to one request (the answer's end let go of the sink)
            self.stray = True

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_resp_body(body)
        else:  # a body after a HEAD's answer, read by the parser that answer left (`ResponseReader`)
            self.stray = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.active.discard(self)
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        if self.tunnel:
            sink.on_tunnel_closed()
        elif self.ends_at_close():  # a body delimited by the connection's end ends here
            sink.on_resp_done()
        else:
            retryable = self.reused and not self.got_bytes
            if self.got_bytes:
                err = UpstreamError(
                    "protocol", f"upstream {self.pool.name} closed the connection mid-response"
                )
            else:
                err = UpstreamError(
                    "connect", f"upstream {self.pool.name} closed the connection without answering"
                )
            sink.on_resp_error(err, retryable)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.up_pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.up_resume_writing()

    # --- internals
    def _plain(
        self, sink: ResponseSink, status: int, reason: bytes, headers: Headers, body: bytes, keep_alive: bool
    ) -> None:
        """A whole plain response read by `READ_PLAIN` (a final one, not to a HEAD or an upgrade): what
        llhttp's callbacks do with it (`ResponseReader`: head, body, message complete), in their order."""
        self.status = status
        self.reason = reason
        self.headers = headers
        self.got_head = True
        sink.on_resp_head(status, reason, headers)
        if len(body) != 0:
            now = self.sink  # the sink may have let go of the response
            if now is not None:
                now.on_resp_body(body)
        self.headers = []
        self.reason = b""
        self.got_head = False
        self._message_end(status, headers, keep_alive)

    def _message_end(self, status: int, headers: Headers, keep_alive: bool) -> None:
        sink = self.sink
        if sink is None:  # detached while this read was parsed: the connection is already closed
            return
        self.sink = None
        self.pool.active.discard(self)
        if keep_alive and self.req_done and not self.closed:
            if self.feeding:
                self.ended = sink  # the pool and the sink's end wait for the rest of this read (`_fed`)
                return
            self.pool._release(self)
        else:
            self.abort(graceful=True)
        self._end(sink)

    def _fed(self, parsed: bool) -> None:
        """llhttp has read a read (``parsed``: without an error). A response that ended in it goes back to
        the pool now, unless bytes followed it there: an upstream sending more than one response to one
        request (or a body to a HEAD). Those would be read as the next request's answer; the connection is
        closed instead. Then its sink's end, which may start the next request (a pipelining client's) on
        this connection: until now it was in no pool, so nothing took it while the read was parsed."""
        self.feeding = False
        sink = self.ended
        if sink is not None:
            self.ended = None
            if parsed and not self.stray and not self.closed:
                self.pool._release(self)
            else:
                self.abort()
            self._end(sink)
        self.stray = False

    def _end(self, sink: ResponseSink) -> None:
        """The sink's end: its response is whole, the connection already back in the pool or closed. What
        it raises is its own failure, not the upstream's nor that of a request it started here: logged."""
        try:
            sink.on_resp_done()
        except Exception:
            log.exception("upstream %s: a response's end failed in its sink", self.pool.name)

    def _upgrade(self, rest: bytes) -> None:
        sink = self.sink
        if sink is None or not self.tunnel:
            self.abort()
            return
        self.pool.active.discard(self)  # a tunnel has no deadline and never returns to the pool
        sink.on_upgrade(self, rest)

    def _invalid(self, why: ProtocolError) -> None:
        """The response broke a framing rule, or the sink failed while it was read (`protocol_error`)."""
        self._fail(UpstreamError("protocol", f"upstream {self.pool.name} sent an invalid response: {why}"))

    def _fail(self, exc: UpstreamError) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.on_resp_error(exc, False)

    # --- used by callers
    def start(self, sink: ResponseSink, head: bytes, is_head: bool, req_done: bool, upgrade: bool) -> None:
        """Attach a sink and send a request head (plus any body bytes already at hand).

        The response state was reset when the previous response ended (`ResponseReader`).
        """
        pool = self.pool
        if self.paused:  # paused by its last client after its response had ended (its end's own write)
            self.resume_reading()
        self.sink = sink
        self.is_head = is_head
        self.got_bytes = False
        self.upgrade_ok = upgrade
        self.req_done = req_done
        self.last_io = pool.clock
        self.timeout = pool.total_timeout
        self.deadline = pool.clock + self.timeout
        pool.active.add(self)
        assert self.transport is not None
        self._write(head)

    def send(self, data: bytes) -> None:
        """Send request body bytes (the response-header deadline waits while the body flows)."""
        self.last_io = self.pool.clock
        assert self.transport is not None
        self._write(data)

    def end_request(self) -> None:
        """The request body is complete: the response-header deadline starts now."""
        self.req_done = True
        self.deadline = self.pool.clock + self.timeout

    def pause_reading(self) -> None:
        """Stop reading the upstream (backpressure from a slow client)."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the upstream again."""
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def detach(self) -> None:
        """Forget the sink (its client went away); the connection is closed, not reused."""
        self.sink = None
        self.abort()

    def abort(self, graceful: bool = False) -> None:
        """Close the connection now (graceful: after the write buffer drains)."""
        self.pool.active.discard(self)
        self.closed = True
        self.sink = self.sink if self.tunnel else None
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
