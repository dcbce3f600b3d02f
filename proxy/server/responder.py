"""The upstream half of a client connection: `Responder`, the base class of `ClientProtocol`.

A `Responder` holds a connection's shared state (its named state, the in-order request queue, the
response buffer, the backpressure flags) and does everything after a request's head is parsed: it starts
the request on a pooled upstream connection, is that connection's *sink* (the `proxy.upstream` response
callbacks), writes the response to the client (hop-by-hop headers removed, the request id added,
re-framed for the client: chunked for HTTP/1.1 when the length is unknown, close-delimited for HTTP/1.0;
one ``transport.write`` per upstream read), answers with the gateway's own JSON errors, and accounts for
each finished request once (observer, access log, shadow exchange). It is complete on its own: the
subclass `proxy.server.holding.Holder` holds a sampled write until new's dry run of it has answered,
and `proxy.server.connection.ClientProtocol` adds the client transport and the request parser.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Final

from proxy.http1.errors import UpstreamError, error_response
from proxy.server.breaker import DENY
from proxy.server.canary import SERVED_BY
from proxy.server.exchange import Exchange
from proxy.server.fallback import FALLBACK_HEADER, IDEMPOTENT, Attempt, request_prefix
from proxy.server.gateway import AccessRecord
from proxy.server.heads import CHUNKED, interim_head, request_head, response_head
from proxy.server.host import ConnectionHost
from proxy.server.request import Request
from proxy.server.states import CLOSED, CLOSING, IDLE, TUNNEL, UPGRADE
from proxy.upstream.conn import unconnected
from proxy.upstream.pool import Headers, ResponseSink, UpConn

__all__ = ["Responder"]

log = logging.getLogger("strangler.server")

FLUSH_AT: Final = 64 * 1024  # write to the client early when this much response body is batched
_RETRYABLE = frozenset((b"GET", b"HEAD"))


class Responder(ResponseSink):
    """A client connection's requests from their parsed head to their accounted end (a base class)."""

    def __init__(self, host: ConnectionHost) -> None:
        self.server = host
        self.gateway = host.gateway
        self.fwd = host.forwarder
        self.loop = host.loop
        self.transport: asyncio.Transport | None = None
        # The transport's write, bound once (`ClientProtocol.connection_made`): compiled code calls a method
        # of an object it does not own by name, a type look-up each time. Every call is guarded by
        # ``transport is not None``.
        self._write: Callable[[bytes], None] = unconnected
        self.peer = b"unknown"
        self.state = IDLE  # see proxy.server.states
        self.cur: Request | None = None  # the request being answered
        self.queue: collections.deque[Request] = collections.deque()  # pipelined, answered in order
        self.out: list[bytes] = []
        self.out_size = 0
        self.resp_chunked = False
        self.reading_paused = False
        self.up_paused = False  # the upstream is not taking the request body fast enough
        self.write_paused = False  # the client is not taking the response fast enough
        self.upgrading: Request | None = None  # a WebSocket request awaiting the upstream's answer
        self.tunnel: UpConn | None = None

    # ---------------------------------------------------------------- starting a request upstream
    def _start(self, rq: Request) -> None:
        self.cur = rq
        self.server.active_requests += 1
        if rq.error is not None:
            self._respond_error(rq, rq.error.status, rq.error.message)
            return
        if rq.guard is not None:  # new may fail it over to legacy (proxy.server.fallback)
            self._guard_start(rq, rq.guard)
        tee = rq.tee
        if tee is not None and tee.hold:  # a sampled write: new's dry run first (proxy.server.holding)
            self._hold(rq)
            return
        pool = rq.pool
        assert pool is not None
        conn = pool.acquire()
        if conn is None:
            self.server.spawn(self._connect(rq))
        elif rq.pending or self.up_paused or self.write_paused:
            self._attach(rq, conn)
        else:  # _attach's common case, inlined: nothing buffered, nothing paused
            rq.conn = conn
            rq.pending = None
            conn.start(self, rq.head, rq.is_head, rq.body_done, rq.websocket)

    def _hold(self, rq: Request) -> None:
        """Hold a sampled write for its dry run (`proxy.server.holding.Holder`); here: forward it."""
        self._forward(rq)

    def _forward(self, rq: Request) -> None:
        """Send the current request upstream (``_start``'s end, for a request that was held)."""
        pool = rq.pool
        assert pool is not None
        conn = pool.acquire()
        if conn is None:
            self.server.spawn(self._connect(rq))
        else:
            self._attach(rq, conn)

    async def _connect(self, rq: Request) -> None:
        pool = rq.pool
        assert pool is not None
        counters = self.gateway.counters
        try:
            conn = await pool.connect(pool.total_timeout)
        except UpstreamError as e:
            counters.upstream_failed(pool.name, e.kind, True)
            if self.cur is rq and self.state != CLOSED and rq.pool is pool:
                if rq.guard is not None and self._fail_over(rq, rq.guard, "connect"):
                    return
                self._respond_error(rq, e.status, e.message)
            return
        counters.upstream_connected(pool.name)
        if self.state == CLOSED or self.cur is not rq or rq.pool is not pool:  # gone, or moved to legacy
            pool._release(conn)
            return
        self._attach(rq, conn)

    def _attach(self, rq: Request, conn: UpConn) -> None:
        rq.conn = conn
        pending = rq.pending
        rq.pending = None
        head = rq.head if not pending else b"".join([rq.head, *pending])
        if self.up_paused:
            self.up_paused = False
            self._update_reading()
        if self.write_paused:
            conn.pause_reading()
        conn.start(self, head, rq.is_head, rq.body_done, rq.websocket)

    def _update_reading(self) -> None:
        state = self.state
        if state == UPGRADE or state == TUNNEL:
            pause = self.up_paused
        else:
            pause = state >= CLOSING or bool(self.queue) or self.up_paused
        if pause != self.reading_paused and self.transport is not None and state != CLOSED:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self) -> None:
        """Close after the write buffer drains (used by draining and the idle sweep)."""
        if self.state != CLOSED and self.transport is not None:
            self.state = CLOSED
            self.transport.close()

    # ---------------------------------------------------------------- sink callbacks (from UpConn)
    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        rq = self.cur
        if rq is None or not rq.http11:
            return
        if rq.guard is not None:
            rq.guard.stop_timer()  # new is answering
        self.out.append(interim_head(status, reason, self.fwd.response(headers).headers))

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        rq = self.cur
        if rq is None:
            return
        fwd = self.fwd
        lines, length, chunked = fwd.response_lines(headers)
        lines.append(rq.id_line or fwd.request_id_prefix + rq.request_id)  # the line the upstream got
        att = rq.guard
        if att is not None:
            if self._guard_head(rq, att, status):
                return  # new's 5xx is dropped: legacy answers instead
            if att.reason:
                lines.append(FALLBACK_HEADER + att.reason.encode("ascii"))
        rq.status = status
        rq.resp_started = True
        if rq.served_by is not None:  # a `target: auto` route: which side answered (proxy.server.canary)
            lines.append(rq.served_by)
        if not rq.body_done or self.server.draining:
            rq.keep_alive = False
        head, framing = response_head(
            status, reason, lines, length, chunked, rq.keep_alive, rq.is_head, rq.http11
        )
        self.out.append(head)
        self.resp_chunked = False
        if framing:
            if framing == CHUNKED:
                self.resp_chunked = True
            else:
                rq.keep_alive = False  # close-delimited (HTTP/1.0): the body ends when the connection does
        tee = rq.tee
        if tee is not None:
            if length is None and _event_stream(headers):  # a stream has no length: others skip the scan
                # An event stream has no end to compare at: drop the copy now rather than buffer it.
                rq.tee = None
                self._not_comparable(rq, "stream")
            else:
                tee.resp_headers = headers  # not copied: UpConn makes a new list for each response
                tee.resp = []
                conn = rq.conn
                if conn is not None:
                    tee.raw = conn.raw  # b"" unless this response is one whole plain read (UpConn._plain)

    def on_resp_body(self, chunk: bytes) -> None:
        rq = self.cur
        if rq is None:
            return
        size = len(chunk)
        if self.resp_chunked:
            self.out += (b"%x\r\n" % size, chunk, b"\r\n")
        else:
            self.out.append(chunk)
        rq.bytes_out += size
        tee = rq.tee
        if tee is not None and tee.resp is not None:
            tee.resp_size += size
            if tee.resp_size <= tee.cap:
                tee.resp.append(chunk)
            else:
                tee.resp = None
                tee.resp_over = True
        self.out_size += size
        if self.out_size > FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write the batched response bytes to the client in one write."""
        out = self.out
        if out:
            if self.state != CLOSED and self.transport is not None:
                self._write(_joined(out))
            out.clear()
            self.out_size = 0

    def on_resp_done(self) -> None:
        rq = self.cur
        if rq is None:
            return
        out = self.out
        if self.resp_chunked:
            out.append(b"0\r\n\r\n")
        if out:  # flush, inlined: one write for the head and a small body
            if self.state != CLOSED and self.transport is not None:
                self._write(_joined(out))
            out.clear()
            self.out_size = 0
        rq.resp_done = True
        rq.conn = None
        self._finish(rq, rq.status)
        self._next(rq)

    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None:
        rq = self.cur
        if rq is None:
            return
        rq.conn = None
        if (
            retryable
            and not rq.retried
            and rq.method in _RETRYABLE
            and rq.body_done
            and rq.bytes_in == 0
            and not rq.resp_started
        ):
            # A pooled keep-alive connection the upstream had closed: nothing was processed, resend once.
            rq.retried = True
            self.server.spawn(self._connect(rq))
            return
        if rq.pool is not None:
            self.gateway.counters.upstream_failed(rq.pool.name, exc.kind, False)
        att = rq.guard
        if att is not None and not rq.resp_started:
            reason = "timeout" if exc.kind == "timeout" else "reset"
            if self._fail_over(rq, att, reason):
                return
        self.out.clear()
        self.out_size = 0
        if rq.resp_started:
            self._abort_client(rq)  # a truncated response must not look complete
        else:
            self._respond_error(rq, exc.status, exc.message)

    def on_upgrade(self, conn: UpConn, rest: bytes) -> None:
        rq = self.cur
        if rq is None or self.upgrading is not rq:
            conn.detach()
            return
        self.upgrading = None
        self.tunnel = conn
        self.state = TUNNEL
        self.server.tunnels += 1
        self.out.append(rest)
        self.flush()
        rq.resp_done = True
        rq.conn = None
        self._finish(rq, 101)
        self._update_reading()

    def on_tunnel_data(self, data: bytes) -> None:
        if self.state != CLOSED and self.transport is not None:
            self._write(data)

    def on_tunnel_closed(self) -> None:
        if self.tunnel is not None:
            self.tunnel = None
            self.server.tunnels -= 1
        self.close()

    def up_pause_writing(self) -> None:
        if not self.up_paused:
            self.up_paused = True
            self._update_reading()

    def up_resume_writing(self) -> None:
        if self.up_paused:
            self.up_paused = False
            self._update_reading()

    # ---------------------------------------------------------------- finishing
    def _respond_error(self, rq: Request, status: int, message: str) -> None:
        keep = rq.keep_alive and rq.body_done and rq.error is None and not self.server.draining
        rq.keep_alive = keep
        rq.status = status
        data = error_response(
            status, message, rq.request_id, request_id_header=self.fwd.request_id_name, close=not keep
        )
        rq.bytes_out = len(data) - data.index(b"\r\n\r\n") - 4  # the body, as for upstream responses
        if self.state != CLOSED and self.transport is not None:
            self._write(data)
        rq.resp_done = True
        self._finish(rq, status)
        self._next(rq)

    def _abort_client(self, rq: Request) -> None:
        self._finish(rq, rq.status)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def _next(self, rq: Request) -> None:
        if self.state == CLOSED:
            return
        if not rq.keep_alive or not rq.body_done:
            self.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
        if self.cur is None and (self.server.draining or self.state == CLOSING):
            self.close()
            return
        if self.reading_paused or self.state >= CLOSING or self.up_paused or self.queue:
            self._update_reading()  # otherwise reading is on and stays on: nothing to change

    def _finish(self, rq: Request, status: int) -> None:
        """Account for a request once: observer, access log, shadow; never raises."""
        if rq.finished:
            return
        rq.finished = True
        if self.cur is rq:
            self.cur = None
        server = self.server
        server.active_requests -= 1
        route = rq.route
        if route is None:
            if server.draining:
                server.check_drained()
            return
        seconds = perf_counter() - rq.started
        gateway = self.gateway
        # The side that served it: the route's target, or the one picked for a `target: auto` route, or
        # legacy when it served in new's place (a fallback moves rq.pool).
        pool = rq.pool
        target = pool.name if pool is not None else route.target
        att = rq.guard
        if att is not None:
            att.stop_timer()
            att.abandon()  # no outcome on new (its client left): a probe slot is free again
        try:  # the observer's failure must not reach the data path
            counts = gateway.request_counts
            if counts is not None:  # the metrics' own: a direct call (see Gateway)
                counts.observe(route.name, target, status, seconds)
            else:
                gateway.observer.observe(route.name, target, status, seconds)
        except Exception:
            log.exception("request observer failed")
        if gateway.access_log is not None:
            gateway.log_access(
                AccessRecord(
                    rq.request_id.decode("ascii"),
                    rq.method_str,
                    rq.path,
                    route.name,
                    target,
                    status,
                    seconds,
                    rq.bytes_in,
                    rq.bytes_out,
                    self.peer.decode("ascii", "replace"),
                )
            )
        tee = rq.tee
        if tee is not None and rq.websocket:
            self._not_comparable(rq, "websocket")  # a copy would be a second live session: never made
        elif tee is not None and rq.resp_started and rq.resp_done:
            assert pool is not None
            req = tee.req
            req_body = None if req is None else _joined(req) if req else b""  # a GET's: b"", no join
            resp = tee.resp
            resp_body = None if resp is None or tee.resp_over else _joined(resp) if resp else b""
            # The response's bytes, for a GET's copy to be compared with in place (only a GET's is).
            raw = tee.raw if resp_body is not None and rq.method_str == "GET" else b""
            shadow = gateway.shadow
            if shadow is not None:
                try:  # shadowing's failure must not reach the data path
                    shadow.submit(
                        Exchange(
                            route, rq.method_str, rq.path, rq.query, rq.header_lines, req_body, pool.name,
                            status, tee.resp_headers, resp_body, seconds - tee.held,
                            rq.request_id, rq.host, tee.prewrite, rq.header_block, rq.target,
                            raw,
                        )
                    )  # fmt: skip
                except Exception:
                    log.exception("shadow submit failed")
        if server.draining:
            server.check_drained()

    # ---------------------------------------------------------------- fallback (proxy.server.fallback)
    def _guard_start(self, rq: Request, att: Attempt) -> None:
        """A new-bound request of a guarded route starts: the breaker's say, then the timeout fallback."""
        guard = att.guard
        breaker = guard.breaker
        if breaker is not None:
            att.admitted = breaker.admit()
            if att.admitted == DENY:  # open: legacy serves it, new is not even connected to
                att.settled = True
                self._to_legacy(rq, att, "circuit")
                return
        if guard.timeout > 0 and rq.method in IDEMPOTENT and not rq.websocket:
            att.timer = self.loop.call_later(guard.timeout, self._guard_timeout, rq)

    def _guard_timeout(self, rq: Request) -> None:
        """New sent no response byte within the route's fallback timeout."""
        att = rq.guard
        assert att is not None
        att.timer = None
        if rq is not self.cur or rq.finished or rq.resp_started or self.state == CLOSED:
            return
        if att.reason or not self._may_fail_over(rq, att, "timeout"):
            return  # new's own timeout answers it (504)
        conn = rq.conn
        rq.conn = None
        if conn is not None and conn.sink is self:
            conn.detach()  # its answer, should it come, is not wanted: the connection cannot be reused
        self.gateway.counters.upstream_failed("new", "timeout", False)
        self._fail_over(rq, att, "timeout")

    def _guard_head(self, rq: Request, att: Attempt, status: int) -> bool:
        """New's response head: a success or failure for the breaker; True when a 5xx falls back."""
        att.stop_timer()
        if att.reason:
            return False  # legacy's answer
        if status >= 500 and att.guard.count_5xx:
            if not self._may_fail_over(rq, att, "5xx"):
                att.settle(False)
                return False
            conn = rq.conn
            rq.conn = None
            if conn is not None and conn.sink is self:
                conn.detach()  # the rest of the 5xx is not read
            return self._fail_over(rq, att, "5xx")
        att.settle(True)
        return False

    def _may_fail_over(self, rq: Request, att: Attempt, reason: str) -> bool:
        """Whether ``rq`` may still go to legacy for ``reason`` (see `proxy.server.fallback`'s rules)."""
        if att.reason or rq.resp_started or self.gateway.pools.get("legacy") is None:
            return False
        guard = att.guard
        if reason == "connect":  # nothing reached new: any method, if the body is still in hand
            return guard.connect and (
                rq.pending is not None or (rq.body_done and (rq.bytes_in == 0 or att.kept is not None))
            )
        allowed = guard.on_5xx if reason == "5xx" else guard.timeout > 0
        # It may have reached new: idempotent methods only, with the whole body kept.
        return (
            allowed
            and rq.method in IDEMPOTENT
            and not rq.websocket
            and rq.body_done
            and (rq.bytes_in == 0 or att.kept is not None or rq.pending is not None)
        )

    def _fail_over(self, rq: Request, att: Attempt, reason: str) -> bool:
        """New failed ``rq`` (a failure for the breaker): send it to legacy if it may go; False if not."""
        att.stop_timer()
        att.settle(False)
        if not self._may_fail_over(rq, att, reason):
            return False
        self._to_legacy(rq, att, reason)
        self._forward(rq)
        return True

    def _to_legacy(self, rq: Request, att: Attempt, reason: str) -> None:
        """Point ``rq`` at legacy: its pool, its request line and Host, the body to send again; counted."""
        legacy = self.gateway.pools.get("legacy")
        route = rq.route
        if legacy is None or route is None:  # pragma: no cover - the table always has both upstreams
            return
        att.reason = reason
        prefix = request_prefix(rq.method, legacy, rq.path, rq.query)
        client_host = (rq.host or legacy.hostport) if legacy.client_host else None
        rq.head = request_head(
            prefix, rq.header_block, att.content_length, rq.chunked, rq.websocket, client_host
        )
        if rq.pending is None:  # sent to new already: send the kept copy (or nothing: it had no body)
            rq.pending = list(att.kept) if att.kept else []
            rq.pending_size = att.kept_size
        rq.pool = legacy
        rq.conn = None
        if rq.served_by is not None:  # a `target: auto` route picked new: legacy answers after all
            rq.served_by = SERVED_BY + legacy.name.encode("ascii")
        gateway = self.gateway
        gateway.counters.fallback(route.name, reason)
        if gateway.shadow is not None:
            try:  # shadowing's failure must not reach the data path
                gateway.shadow.fallback(route, reason)
            except Exception:
                log.exception("shadow fallback count failed")
        if rq.tee is not None:  # compared against itself it would prove nothing: counted as not compared
            rq.tee = None
            self._not_comparable(rq, "fallback")

    def _not_comparable(self, rq: Request, reason: str) -> None:
        shadow = self.gateway.shadow
        if shadow is not None and rq.route is not None:
            try:  # shadowing's failure must not reach the data path
                shadow.not_comparable(rq.route, reason)
            except Exception:
                log.exception("shadow not_comparable failed")


def _joined(out: list[bytes]) -> bytes:
    """The batched bytes as one: a response's head and small body are two, copied without a join (~3x);
    one is itself (a shadowed response's body, usually)."""
    size = len(out)
    if size == 1:
        return out[0]
    if size == 2:
        return b"%b%b" % (out[0], out[1])
    return b"".join(out)


def _event_stream(headers: Headers) -> bool:
    """Whether a response's headers say ``Content-Type: text/event-stream`` (server-sent events)."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value[:17].lower() == b"text/event-stream"
    return False
