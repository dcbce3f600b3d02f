"""The client side of the data path: an asyncio Protocol per connection, parsing with httptools (llhttp).

One `ClientProtocol` reads requests, refuses ambiguous framing, routes each request once against the
table current at its start, and streams it to a pooled upstream connection (`proxy.upstream.pool`). The
response streams back through the same object (its `proxy.responder.Responder` half is the upstream
connection's *sink*). Backpressure pauses the other side's reading: a slow client stops the upstream
being read; a slow upstream stops the client being read. Pipelined requests are answered in order (the
next one waits, and reading pauses, while one is in flight). A WebSocket upgrade turns the connection
into a byte tunnel after the upstream's 101.

`proxy.listener.GatewayServer` accepts the connections; `start_server` is re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from time import perf_counter
from typing import TYPE_CHECKING, cast

import httptools

from proxy.http1.errors import UpstreamError
from proxy.server.forwarding import FramingError, new_request_id
from proxy.server.gateway import Gateway
from proxy.server.request import Refusal, Request
from proxy.server.responder import Responder
from proxy.upstream.pool import Headers, UpConn

if TYPE_CHECKING:
    from proxy.server.listener import GatewayServer

__all__ = ["ClientProtocol", "start_server"]

log = logging.getLogger("strangler.server")


class ClientProtocol(Responder, asyncio.Protocol):
    """One client connection: HTTP/1.1 requests in, responses out, in order."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.gateway = server.gateway
        self.fwd = server.forwarder
        self.loop = server.loop
        settings = server.gateway.settings
        self.max_line = settings.max_request_line  # settings are fixed for a gateway's life
        self.max_header = settings.max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.url = b""
        self.headers: Headers = []
        self.header_size = 0
        self.in_head = False
        self.head_started = 0.0
        self.head_raw = 0
        self.last_io = server.clock
        self.parsing: Request | None = None  # the request whose head/body is being parsed
        self.cur: Request | None = None  # the request being answered
        self.queue: collections.deque[Request] = collections.deque()
        self.refusal: Refusal | None = None
        self.out: list[bytes] = []
        self.out_size = 0
        self.resp_chunked = False
        self.closed = False
        self.half_closed = False  # the client sent EOF after complete requests: close once answered
        self.broken = False  # no more requests are read (refused, upgraded or closing)
        self.reading_paused = False
        self.up_paused = False  # the upstream is not taking the request body fast enough
        self.write_paused = False  # the client is not taking the response fast enough
        self.upgrading: Request | None = None  # a WebSocket request awaiting the upstream's answer
        self.tunnel: UpConn | None = None

    # ---------------------------------------------------------------- client transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        high = self.gateway.settings.write_high_water
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode("ascii")
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            self.server.tunnels -= 1
            tunnel.abort(graceful=True)
        rq = self.cur
        if rq is not None:
            self.cur = None
            conn = rq.conn
            if conn is not None and conn.sink is self:
                conn.detach()  # the response was not finished: the connection cannot be reused
            self._finish(rq, rq.status if rq.resp_done else 0)
        self.queue.clear()
        self.server.check_drained()

    def data_received(self, data: bytes) -> None:
        self.last_io = self.server.clock
        if self.tunnel is not None:
            self.tunnel.send(data)
            return
        if self.upgrading is not None:  # bytes after a WebSocket request: the upstream's, unparsed
            self._send_body(self.upgrading, data)
            return
        if self.broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._parser_upgraded(data[e.args[0] :])
            return
        except httptools.HttpParserError as e:
            refusal = self.refusal
            if refusal is None and isinstance(e, httptools.HttpParserCallbackError):
                # Our own callback failed: a gateway bug, not the client's fault.
                log.error("request handling failed", exc_info=e.__context__)
                refusal = Refusal(500, "the gateway failed to handle this request; see its log")
            self._refuse(refusal or Refusal(400, f"malformed request: {e}"))
            return
        if self.in_head:
            self.head_raw += len(data)
            if self.head_raw > self.max_header + self.max_line:
                self._refuse(Refusal(431, "the request head is too large"))

    def eof_received(self) -> bool:
        # A client may half-close after sending complete requests (nc, some HTTP/1.0 tools): answer
        # them, then close. A half-closed tunnel or a half-sent request is abandoned.
        if self.tunnel is not None or self.upgrading is not None or self.parsing is not None or self.in_head:
            return False
        if self.cur is None:
            return False
        self.half_closed = True
        self.broken = True
        return True

    def pause_writing(self) -> None:  # the client is slow: stop reading the upstream
        self.write_paused = True
        conn = self.tunnel or (self.cur.conn if self.cur is not None else None)
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.tunnel or (self.cur.conn if self.cur is not None else None)
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def _update_reading(self) -> None:
        pause = self.broken or bool(self.queue) or self.up_paused
        if self.upgrading is not None or self.tunnel is not None:
            pause = self.up_paused
        if pause != self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self) -> None:
        """Close after the write buffer drains (used by draining and the idle sweep)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # ---------------------------------------------------------------- httptools request callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_size = 0
        self.in_head = True
        self.head_raw = 0
        self.head_started = self.server.clock

    def on_url(self, url: bytes) -> None:
        # Usually one piece (b"" + url is url itself); pieces are bounded by max_line, so += is fine.
        url = self.url = self.url + url
        if len(url) > self.max_line:
            self.refusal = Refusal(414, "the request target is too long")
            raise self.refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # chunked trailers: not forwarded (hop-by-hop framing)
        self.headers.append((name, value))
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.max_header:
            self.refusal = Refusal(431, "the request headers are too large")
            raise self.refusal

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        rq = Request(parser.get_method(), True, parser.should_keep_alive(), perf_counter())  # http11: _route
        self.parsing = rq
        try:
            self._route(rq, parser.should_upgrade())
        except Refusal as refusal:
            refusal.request_id = rq.request_id
            self.refusal = refusal
            raise
        if self.cur is None:
            self._start(rq)
        else:  # pipelined: answered after the current one; read no further meanwhile
            self.queue.append(rq)
            self._update_reading()

    def _route(self, rq: Request, upgrade: bool) -> None:
        gateway = self.gateway
        method = rq.method
        if method == b"CONNECT":
            raise Refusal(405, "CONNECT is not supported: this is a reverse proxy, not a forward proxy")
        # llhttp keeps an HTTP/1.0 connection alive only when a Connection header asks for it, and a
        # plain request has none: kept alive and plain means HTTP/1.1, without asking the parser (whose
        # get_http_version() formats a string on every call).
        prep = self.fwd.request_plain(self.headers, self.peer) if rq.keep_alive else None
        if prep is None:
            rq.http11 = self.parser.get_http_version() == "1.1"
            try:
                prep = self.fwd.request(self.headers, self.peer, rq.http11)
            except FramingError as e:
                raise Refusal(400, str(e)) from None
        rq.request_id = prep.request_id
        if prep.loop:
            raise Refusal(508, "the request already passed through this gateway (Via); check the routes")
        content_length = prep.content_length
        chunked = prep.chunked
        lines = prep.lines
        url = self.url
        # table and pools are read once, together: a reload does not affect a request in flight.
        query, match, pool, prefix, method_str = self.server.route(gateway.table, gateway.pools, method, url)
        route = match.route
        rq.route = route
        rq.pool = pool
        rq.path = match.forward_path
        rq.query = query
        rq.method_str = method_str
        rq.header_lines = lines
        if content_length is None and not chunked and not upgrade:
            # The common case (no body): one join for the whole upstream head.
            rq.body_done = True
            rq.head = prefix + b"\r\n".join(lines) + b"\r\n\r\n"
        else:
            has_body = chunked or bool(content_length)
            if upgrade:
                if has_body:
                    raise Refusal(400, "a request asking to upgrade the protocol cannot carry a body")
                if prep.websocket and method == b"GET":
                    rq.websocket = True
                    rq.keep_alive = False  # after the exchange the parser is in upgrade mode: close
            rq.chunked = chunked
            rq.body_done = not has_body
            head = [prefix, b"\r\n".join(lines), b"\r\n"]
            if content_length is not None:
                head.append(b"Content-Length: %d\r\n" % content_length)
            elif chunked:
                head.append(b"Transfer-Encoding: chunked\r\n")
            if rq.websocket:
                head.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
            head.append(b"\r\n")
            rq.head = b"".join(head)
        if method == b"HEAD":
            rq.is_head = True
        shadow = gateway.shadow
        if shadow is not None:
            try:
                if shadow.wants(route, method_str):
                    rq.tee_cap = shadow.body_cap
                    rq.tee_req = []
            except Exception:
                log.exception("shadow.wants failed")

    def on_body(self, body: bytes) -> None:
        rq = self.parsing
        if rq is None:
            return
        rq.bytes_in += len(body)
        tee = rq.tee_req
        if tee is not None:
            rq.tee_req_size += len(body)
            if rq.tee_req_size <= rq.tee_cap:
                tee.append(body)
            else:
                rq.tee_req = None
                rq.tee_over = True
        self._send_body(rq, b"%x\r\n%b\r\n" % (len(body), body) if rq.chunked else body)

    def on_message_complete(self) -> None:
        rq = self.parsing
        self.parsing = None
        if rq is None or rq.body_done:
            return
        if rq.chunked:
            self._send_body(rq, b"0\r\n\r\n")
        rq.body_done = True
        conn = rq.conn
        if conn is not None and conn.sink is self:
            conn.end_request()

    def _send_body(self, rq: Request, data: bytes) -> None:
        conn = rq.conn
        if conn is not None:
            if conn.sink is self or conn.tunnel:
                conn.send(data)
        elif rq.pending is not None:  # upstream connection not open yet: buffer, bounded
            rq.pending.append(data)
            rq.pending_size += len(data)
            if rq.pending_size > self.gateway.settings.pending_body_limit and not self.up_paused:
                self.up_paused = True
                self._update_reading()

    def _parser_upgraded(self, rest: bytes) -> None:
        rq = self.cur if self.cur is not None and self.cur.websocket else None
        if rq is None and self.queue and self.queue[-1].websocket:
            rq = self.queue[-1]
        if rq is not None:
            self.upgrading = rq
            self._update_reading()
            if rest:
                self._send_body(rq, rest)
            return
        # An Upgrade we do not support (h2c...): the header was dropped, carry on as plain HTTP/1.1.
        self.parser = httptools.HttpRequestParser(self)
        if rest:
            self.data_received(rest)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer a request we will not forward (after any in-flight one) and stop reading."""
        self.refusal = None
        self.broken = True
        self._update_reading()
        rq = self.parsing
        self.parsing = None
        if rq is not None and (rq is self.cur or rq in self.queue):
            # Its head was accepted but its body is malformed: abandon it.
            rq.error = refusal
            rq.keep_alive = False
            if rq is self.cur:
                conn = rq.conn
                if conn is not None and conn.sink is self:
                    conn.detach()
                rq.conn = None
                if rq.resp_started:
                    self._abort_client(rq)
                else:
                    self._respond_error(rq, refusal.status, refusal.message)
            return
        err = Request(b"-", True, False, perf_counter())
        err.request_id = refusal.request_id or new_request_id()
        err.error = refusal
        if self.cur is None:
            self._start(err)
        else:
            self.queue.append(err)

    # ---------------------------------------------------------------- upstream side
    def _start(self, rq: Request) -> None:
        self.cur = rq
        self.server.active_requests += 1
        if rq.error is not None:
            self._respond_error(rq, rq.error.status, rq.error.message)
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

    async def _connect(self, rq: Request) -> None:
        pool = rq.pool
        assert pool is not None
        try:
            conn = await pool.connect(pool.total_timeout)
        except UpstreamError as e:
            if self.cur is rq and not self.closed:
                self._respond_error(rq, e.status, e.message)
            return
        if self.closed or self.cur is not rq:
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
        if self.write_paused and conn.transport is not None:
            conn.transport.pause_reading()
        conn.start(self, head, rq.is_head, rq.body_done, rq.websocket)


async def start_server(
    gateway: Gateway, sock: socket.socket | None = None, host: str = "127.0.0.1", port: int = 0
) -> GatewayServer:
    """Create a `GatewayServer` for ``gateway`` and start accepting (on ``sock`` or ``host:port``)."""
    from proxy.server.listener import start_server as start  # the listener imports this module

    return await start(gateway, sock, host, port)
