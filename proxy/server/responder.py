"""The response half of a client connection: the upstream connection's *sink*.

`Responder` receives the upstream's response through the `proxy.upstream.ResponseSink` callbacks and
writes it to the client: hop-by-hop headers removed, the request id added, re-framed for the client (chunked
for HTTP/1.1 when the length is unknown, close-delimited for HTTP/1.0), one ``transport.write`` per upstream
read. It also answers with the gateway's own JSON errors, and accounts for each finished request once
(observer, access log, shadow exchange). `proxy.server.ClientProtocol` is the other half.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from time import perf_counter
from typing import TYPE_CHECKING

from proxy.http1.errors import UpstreamError, error_response
from proxy.server.exchange import Exchange
from proxy.server.forwarding import Forwarder
from proxy.server.gateway import AccessRecord, Gateway
from proxy.server.request import Request
from proxy.upstream.pool import Headers, UpConn

if TYPE_CHECKING:
    from proxy.server.listener import GatewayServer

__all__ = ["Responder"]

log = logging.getLogger("strangler.server")

FLUSH_AT = 64 * 1024  # write to the client early when this much response body is batched
_RETRYABLE = frozenset((b"GET", b"HEAD"))
_END = b"\r\n"
_END_CLOSE = b"Connection: close\r\n\r\n"


class Responder:
    """Response-side state and callbacks of `proxy.server.ClientProtocol` (a base class, not used alone)."""

    server: GatewayServer
    gateway: Gateway
    fwd: Forwarder
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    cur: Request | None
    queue: collections.deque[Request]
    out: list[bytes]
    out_size: int
    resp_chunked: bool
    closed: bool
    half_closed: bool
    broken: bool
    reading_paused: bool
    up_paused: bool
    upgrading: Request | None
    tunnel: UpConn | None
    peer: bytes

    # Provided by ClientProtocol.
    def _start(self, rq: Request) -> None:
        raise NotImplementedError

    async def _connect(self, rq: Request) -> None:
        raise NotImplementedError

    def _update_reading(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- sink callbacks (from UpConn)
    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        rq = self.cur
        if rq is None or not rq.http11:
            return
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        for name, value in self.fwd.response(headers).headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self.out.append(b"".join(lines))

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        rq = self.cur
        if rq is None:
            return
        rq.status = status
        rq.resp_started = True
        fwd = self.fwd
        lines, length, chunked = fwd.response_lines(headers)
        lines.append(fwd.request_id_prefix + rq.request_id)
        self.resp_chunked = False
        if not rq.body_done or self.server.draining:
            rq.keep_alive = False
        if length is not None and not chunked and status != 101:
            # The common case: the whole head in one piece.
            self.out.append(
                b"HTTP/1.1 %d %b\r\n%b\r\nContent-Length: %b\r\n%b"
                % (status, reason, b"\r\n".join(lines), length, _END if rq.keep_alive else _END_CLOSE)
            )
        else:
            self._head_framed(rq, status, reason, lines)
        if rq.tee_req is not None or rq.tee_over:
            rq.resp_headers = headers  # not copied: UpConn makes a new list for each response
            rq.tee_resp = []

    def _head_framed(self, rq: Request, status: int, reason: bytes, lines: list[bytes]) -> None:
        # A response head without a usable Content-Length: upgrade, no body, re-chunked or close-delimited.
        out = self.out
        out += (b"HTTP/1.1 %d %b\r\n" % (status, reason), b"\r\n".join(lines), b"\r\n")
        if status == 101:
            out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            return
        if rq.is_head or status in (204, 304):
            pass
        elif rq.http11:
            out.append(b"Transfer-Encoding: chunked\r\n")
            self.resp_chunked = True
        else:
            rq.keep_alive = False  # HTTP/1.0 client: the body ends when the connection does
        out.append(_END if rq.keep_alive else _END_CLOSE)

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
        tee = rq.tee_resp
        if tee is not None:
            rq.tee_resp_size += size
            if rq.tee_resp_size <= rq.tee_cap:
                tee.append(chunk)
            else:
                rq.tee_resp = None
                rq.tee_resp_over = True
        self.out_size += size
        if self.out_size > FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        out = self.out
        if out:
            if not self.closed and self.transport is not None:
                self.transport.write(b"".join(out) if len(out) > 1 else out[0])
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
            if not self.closed and self.transport is not None:
                self.transport.write(b"".join(out) if len(out) > 1 else out[0])
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
        self.server.tunnels += 1
        self.out.append(rest)
        self.flush()
        rq.resp_done = True
        rq.conn = None
        self._finish(rq, 101)
        self._update_reading()

    def on_tunnel_data(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

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
        if not self.closed and self.transport is not None:
            self.transport.write(
                error_response(
                    status, message, rq.request_id, request_id_header=self.fwd.request_id_name, close=not keep
                )
            )
        rq.resp_done = True
        self._finish(rq, status)
        self._next(rq)

    def _abort_client(self, rq: Request) -> None:
        self._finish(rq, rq.status)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _next(self, rq: Request) -> None:
        if self.closed:
            return
        if not rq.keep_alive or not rq.body_done:
            self.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
        if self.cur is None and (self.server.draining or self.half_closed):
            self.close()
            return
        if self.reading_paused or self.broken or self.up_paused or self.queue:
            self._update_reading()  # otherwise reading is on and stays on: nothing to change

    def _finish(self, rq: Request, status: int) -> None:
        """Account for a request once: observer, access log, shadow; never raises."""
        if rq.finished:
            return
        rq.finished = True
        if self.cur is rq:
            self.cur = None
        self.server.active_requests -= 1
        route = rq.route
        if route is None:
            if self.server.draining:
                self.server.check_drained()
            return
        seconds = perf_counter() - rq.started
        gateway = self.gateway
        try:  # Gateway.observe, inlined: the observer's failure must not reach the data path
            gateway.observer.observe(route.name, route.target, status, seconds)
        except Exception:
            log.exception("request observer failed")
        if gateway.access_log is not None:
            gateway.log_access(
                AccessRecord(
                    rq.request_id.decode("ascii"),
                    rq.method_str,
                    rq.path,
                    route.name,
                    route.target,
                    status,
                    seconds,
                    rq.bytes_in,
                    rq.bytes_out,
                    self.peer.decode("ascii", "replace"),
                )
            )
        if (rq.tee_req is not None or rq.tee_over) and rq.resp_started and rq.resp_done:
            pool = rq.pool
            assert pool is not None
            req_body = b"".join(rq.tee_req) if rq.tee_req is not None else None
            resp_body = b"".join(rq.tee_resp) if rq.tee_resp is not None and not rq.tee_resp_over else None
            shadow = gateway.shadow
            if shadow is not None:
                try:  # Gateway.submit_shadow, inlined: shadowing's failure must not reach the data path
                    shadow.submit(
                        Exchange(  # positional: a keyword call costs more, on every shadowed request
                            route, rq.method_str, rq.path, rq.query, rq.header_lines, req_body, pool.name,
                            status, rq.resp_headers, resp_body, seconds, rq.request_id.decode("ascii"),
                        )
                    )
                except Exception:
                    log.exception("shadow submit failed")
        if self.server.draining:
            self.server.check_drained()
