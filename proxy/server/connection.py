"""The client side of the data path: an asyncio Protocol per connection, parsing with httptools (llhttp).
A head the client sent before but for its request line is read without the parser (`_repeat`).

One `ClientProtocol` reads requests, refuses ambiguous framing, routes each request once against the
table current at its start, and hands it to its `proxy.server.responder.Responder` half, which streams it
to a pooled upstream connection and the response back (a sampled write first waits for new's dry run of
it: `proxy.server.holding`). Backpressure pauses the other side's reading: a slow client stops the
upstream being read; a slow upstream stops the client being read. Pipelined requests are answered in
order (the next one waits, and reading pauses, while one is in flight). A WebSocket upgrade turns the
connection into a byte tunnel after the upstream's 101. Its named states are in `proxy.server.states`;
`proxy.server.listener.GatewayServer` accepts the connections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import cast

import httptools

from proxy.http1.errors import error_response
from proxy.http1.line import origin_line
from proxy.server.fallback import Attempt
from proxy.server.forwarding import FramingError, PlainMemo, new_request_id
from proxy.server.heads import request_head
from proxy.server.holding import WAIT_BODY, Holder
from proxy.server.host import ConnectionHost
from proxy.server.request import Refusal, Request, Tee, too_large
from proxy.server.states import BODY, CLOSED, CLOSING, HEAD, IDLE, UPGRADE
from proxy.upstream.pool import Headers

__all__ = ["ClientProtocol"]

log = logging.getLogger("strangler.server")


def _handling_failed(cause: BaseException | None) -> Refusal:
    """The answer when the gateway's own code failed on a request (a bug, not the client's fault): 500,
    with the cause in the log."""
    log.error("request handling failed", exc_info=cause)
    return Refusal(500, "the gateway failed to handle this request; see its log")


class ClientProtocol(Holder, asyncio.Protocol):
    """One client connection: HTTP/1.1 requests in, responses out, in order."""

    parser: httptools.HttpRequestParser
    _feed: Callable[[bytes], None]
    _method: Callable[[], bytes]
    _keep_alive: Callable[[], bool]

    def __init__(self, host: ConnectionHost) -> None:
        super().__init__(host)
        self.routes = host.routes
        settings = host.gateway.settings
        self.max_line = settings.max_request_line  # settings are fixed for a gateway's life
        self.max_header = settings.max_header_bytes
        self.max_body = settings.max_body_bytes
        self.body_limit = 0  # the chunked request body being read may not pass this (0: no limit)
        self._new_parser()
        self.url = b""
        self.headers: Headers = []
        self.header_size = 0
        self.head_started = 0.0
        self.head_raw = 0
        self.last_io = host.clock
        self.parsing: Request | None = None  # the request whose head/body is being parsed
        self.refusal: Refusal | None = None
        self.plain = PlainMemo()  # the last plain request's headers, as forwarded (`request_plain`)
        # A head seen before but for its request line goes past the parser (`_repeat`): the bytes after that
        # line (b"": none yet) and the headers llhttp made of them. Set by `_remember`.
        self.tail = b""
        self.tail_headers: Headers = []
        self.kept = False  # `_route`: this request's headers were the memo's kept ones (`request_plain`)

    def _new_parser(self) -> None:
        """A fresh request parser, and its methods every request calls, bound once (as the response
        reader's: compiled code calls a method of an object it does not own by name, a bound one directly)."""
        parser = self.parser = httptools.HttpRequestParser(self)
        self._feed = parser.feed_data
        self._method = parser.get_method
        self._keep_alive = parser.should_keep_alive

    # ---------------------------------------------------------------- client transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._write = self.transport.write
        high = self.gateway.settings.write_high_water
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode("ascii")
        server = self.server
        limit = server.max_connections
        if limit and len(server.connections) >= limit:
            self._refuse_connection()
            return
        server.connections.add(self)

    def _refuse_connection(self) -> None:
        # Over max_connections: say so plainly and close, before reading anything from the client.
        self.gateway.counters.refused_connections += 1
        self.state = CLOSED
        assert self.transport is not None
        self.transport.write(
            error_response(
                503,
                f"the gateway has reached its limit of {self.server.max_connections} open connections; "
                "retry shortly",
                new_request_id(),
                request_id_header=self.fwd.request_id_name,
                close=True,
            )
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
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
        if self.state > BODY:  # one compare for the rare states: tunnel, upgrade, closing, closed
            if self.tunnel is not None:
                self.tunnel.send(data)
            elif self.upgrading is not None:  # bytes after a WebSocket request: the upstream's, unparsed
                self._send_body(self.upgrading, data)
            return
        tail = self.tail
        idle = self.state == IDLE
        # len(), not the bytes' truth: compiled, a native read instead of a call (as for `prep.block`).
        if idle and len(tail) != 0 and data.endswith(tail) and self._repeat(data, len(data) - len(tail)):
            return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as e:
            self._parser_upgraded(data[e.args[0] :])
            return
        except httptools.HttpParserError as e:
            refusal = self.refusal
            if refusal is None and isinstance(e, httptools.HttpParserCallbackError):
                refusal = _handling_failed(e.__context__)  # our own callback failed
            if refusal is None and "HTTP version" in str(e):  # llhttp: "Invalid HTTP version" (1.2, 3.0...)
                refusal = Refusal(505, "this HTTP version is not supported: send HTTP/1.1 or HTTP/1.0")
            self._refuse(refusal or Refusal(400, f"malformed request: {e}"))
            return
        if self.kept:
            self.kept = False
            if idle:
                self._remember(data)
        if self.state == HEAD:
            self.head_raw += len(data)
            if self.head_raw > self.max_header + self.max_line:
                self._refuse(Refusal(431, "the request head is too large"))

    def eof_received(self) -> bool:
        # A client may half-close after sending complete requests (nc, some HTTP/1.0 tools): answer
        # them, then close. A half-closed tunnel or a half-sent request is abandoned.
        state = self.state
        if (state != IDLE and state != CLOSING) or self.cur is None:
            return False
        self.state = CLOSING
        return True

    def pause_writing(self) -> None:  # the client is slow: stop reading the upstream
        self.write_paused = True
        conn = self.tunnel or (self.cur.conn if self.cur is not None else None)
        if conn is not None and not conn.closed:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.tunnel or (self.cur.conn if self.cur is not None else None)
        if conn is not None and not conn.closed:
            conn.resume_reading()

    # ---------------------------------------------------------------- the server's calls (`host.Swept`)
    def sweep(self, idle_before: float, head_before: float, body_before: float) -> None:
        """Refuse a head started before ``head_before`` or a body whose head started before ``body_before``
        (408, or a cut once the response started); close if idle since before ``idle_before``."""
        state = self.state
        # A paused read is the upstream's slowness (backpressure), not the client's: its timeouts apply.
        if (
            state == BODY
            and self.parsing is not None
            and self.head_started < body_before
            and not self.reading_paused
        ):
            self._refuse(Refusal(408, "the request body took too long to arrive"))
            return
        if self.cur is not None:
            return
        if state == HEAD:
            if self.head_started < head_before:
                self._refuse(Refusal(408, "the request head took too long to arrive"))
        elif (state == IDLE or state == CLOSING) and self.last_io < idle_before:
            self.close()

    def close_if_idle(self) -> None:
        """Close now if no request is in flight or being read (draining)."""
        if self.cur is None and (self.state == IDLE or self.state == CLOSING):
            self.close()

    def abort(self) -> None:
        """Drop the connection now, without waiting for its write buffer."""
        if self.transport is not None:
            self.transport.abort()

    # ---------------------------------------------------------------- httptools request callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_size = 0
        if self.state == IDLE:  # CLOSED stays closed: a pipelined head after a close is not answered
            self.state = HEAD
        self.head_raw = 0
        self.head_started = self.server.clock

    def on_url(self, url: bytes) -> None:
        # Usually one piece (b"" + url is url itself); pieces are bounded by max_line, so += is fine.
        url = self.url = self.url + url
        if len(url) > self.max_line:
            self.refusal = Refusal(414, "the request target is too long")
            raise self.refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state != HEAD:
            return  # chunked trailers: not forwarded (hop-by-hop framing)
        self.headers.append((name, value))
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.max_header:
            self.refusal = Refusal(431, "the request headers are too large")
            raise self.refusal

    def on_headers_complete(self) -> None:
        self._head_complete(self._method(), self._keep_alive(), self.parser)

    def _head_complete(
        self, method: bytes, keep_alive: bool, parser: httptools.HttpRequestParser | None
    ) -> None:
        """A request's head is complete: route it and start it, or queue it behind the one in flight.
        ``parser`` None: the head was read without it (`_repeat`)."""
        if self.state == HEAD:
            self.state = BODY
        rq = Request(method, True, keep_alive, perf_counter())  # http11: _route
        self.parsing = rq
        try:
            self._route(rq, parser)
        except Refusal as refusal:
            refusal.request_id = rq.request_id
            self.refusal = refusal
            raise
        if self.cur is None:
            self._start(rq)
        else:  # pipelined: answered after the current one; read no further meanwhile
            self.queue.append(rq)
            self._update_reading()

    def _route(self, rq: Request, parser: httptools.HttpRequestParser | None) -> None:
        gateway = self.gateway
        method = rq.method
        if method == b"CONNECT":
            raise Refusal(405, "CONNECT is not supported: this is a reverse proxy, not a forward proxy")
        # llhttp keeps an HTTP/1.0 connection alive only when a Connection header asks for it, and a
        # plain request has none: kept alive and plain means HTTP/1.1, without asking the parser (whose
        # get_http_version() formats a string on every call). Nor does it upgrade: llhttp's upgrade needs
        # Connection and Upgrade headers (or CONNECT, refused above).
        upgrade = False
        prep = self.fwd.request_plain(self.headers, self.peer, self.plain) if rq.keep_alive else None
        if prep is None:
            version = "1.1"  # read without the parser: `origin_line` took only HTTP/1.1, with no upgrade
            if parser is not None:
                upgrade = parser.should_upgrade()
                version = parser.get_http_version()
            if version != "1.1" and version != "1.0":  # llhttp parses 0.9 and 2.0 heads as 1.x-shaped
                raise Refusal(505, f"HTTP/{version} is not supported: send HTTP/1.1 or HTTP/1.0")
            rq.http11 = version == "1.1"
            try:
                prep = self.fwd.request(self.headers, self.peer, rq.http11)
            except FramingError as e:
                raise Refusal(400, str(e)) from None
        elif len(prep.block) != 0:  # the memo's kept lines: these headers came before (`_remember`)
            self.kept = True
        rq.request_id = prep.request_id
        rq.id_line = prep.id_line
        if prep.loop:
            raise Refusal(508, "the request already passed through this gateway (Via); check the routes")
        content_length = prep.content_length
        chunked = prep.chunked
        # table and pools are read once, together: a reload does not affect a request in flight.
        query, match, pool, prefix, method_str, canary, target = self.routes.lookup(
            gateway.table, gateway.pools, method, self.url
        )
        route = match.route
        if canary is not None:  # target: auto; the stage is read per request (proxy.server.canary)
            if canary.serves_new(
                gateway.stages.get(route.name, 0), self.headers, prep.lines, self.peer, self.fwd.trusted_hops
            ):
                pool = canary.new_pool
                prefix = canary.new_prefix
                rq.served_by = canary.new_line
            else:
                rq.served_by = canary.legacy_line
        rq.route = route
        rq.pool = pool
        rq.path = match.forward_path
        rq.query = query
        rq.target = target
        rq.method_str = method_str
        rq.header_lines = lines = prep.lines
        if content_length is None and not chunked and not upgrade:
            rq.body_done = True  # the common case: no body
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
            limit = route.max_body if route.max_body is not None else self.max_body
            if limit:
                if content_length is not None and content_length > limit:
                    raise Refusal(413, too_large(limit, route.name))
                self.body_limit = limit if chunked else 0  # a Content-Length body cannot exceed itself
        if route.fallback is not None or route.breaker is not None:  # off: two None checks per request
            guard = gateway.guards.get(route.name)
            if guard is not None and pool.name == "new":
                rq.guard = Attempt(guard, method, content_length, chunked or bool(content_length))
        rq.host = host = prep.host
        # The default forwards the client's Host (ours for an HTTP/1.0 request without one); the prefix of
        # a `host: upstream` pool carries the upstream's.
        client_host = (host or pool.hostport) if pool.client_host else None
        rq.header_block = block = prep.block or b"\r\n".join(lines)  # kept: a shadow copy sends them too
        rq.head = request_head(prefix, block, content_length, chunked, rq.websocket, client_host)
        if method == b"HEAD":
            rq.is_head = True
        shadow = gateway.shadow
        if shadow is not None:
            try:
                if shadow.wants(route, method_str, pool.name):
                    tee = rq.tee = Tee(shadow.body_cap)
                    if method != b"GET" and method != b"HEAD":  # a write: held for its dry run
                        tee.hold = WAIT_BODY
            except Exception:
                log.exception("shadow.wants failed")

    def _repeat(self, data: bytes, end: int) -> bool:
        """Read ``data`` without the parser when it is the remembered head (`_remember`) but for its request
        line ``data[:end]``, and that line one llhttp reads as `origin_line` does: the callbacks' work, in
        their order, for one head with no body. False: the parser is to read it."""
        line = origin_line(data[:end])
        if line is None:
            return False
        method, url = line
        if len(url) > self.max_line:
            return False  # the parser refuses it (414)
        self.on_message_begin()
        self.url = url
        self.headers = self.tail_headers  # never changed: `on_message_begin` starts a new list
        try:
            self._head_complete(method, True, None)
        except Refusal as refusal:  # as `data_received` does when the parser passes it on
            self._refuse(refusal)
            return True
        except Exception as e:
            self._refuse(_handling_failed(e))
            return True
        finally:
            self.kept = False
        self.on_message_complete()
        return True

    def _remember(self, data: bytes) -> None:
        """After the parser read ``data`` from the start of a head, with a request whose headers came
        twice in a row (`_route`'s ``kept``): when ``data`` was that head and nothing else, and its request
        line one `origin_line` reads as llhttp did, remember the bytes after that line, and the headers, for
        `_repeat`. A keep-alive client sending the same headers (a service's HTTP client, a load
        generator) then skips the parser from its third request on."""
        if self.state != IDLE or self.parsing is not None or not data.endswith(b"\r\n\r\n"):
            return
        if data.find(b"\r\n\r\n") != len(data) - 4:  # two heads (pipelined): a call by name, only here
            return
        end = data.find(b"\r\n")
        line = origin_line(data[:end])
        if line is None or line[1] != self.url or line[0] != self._method():
            return
        self.tail = data[end:]
        self.tail_headers = self.plain.raw or self.headers  # the memo's own list: `same_pairs` by identity

    def on_body(self, body: bytes) -> None:
        rq = self.parsing
        if rq is None:
            return
        size = rq.bytes_in = rq.bytes_in + len(body)
        if self.body_limit and size > self.body_limit:
            self.refusal = Refusal(413, too_large(self.body_limit, rq.route.name if rq.route else ""))
            raise self.refusal
        tee = rq.tee
        if tee is not None and tee.req is not None:
            tee.req_size += len(body)
            if tee.req_size <= tee.cap:
                tee.req.append(body)
            else:
                tee.req = None
                tee.req_over = True
                if tee.hold:  # too large to dry-run: forwarded now
                    self._give_up(rq, "write_body")
        self._send_body(rq, b"%x\r\n%b\r\n" % (len(body), body) if rq.chunked else body)

    def on_message_complete(self) -> None:
        rq = self.parsing
        self.parsing = None
        self.body_limit = 0
        if self.state == BODY:
            self.state = IDLE
        if rq is None or rq.body_done:
            return
        if rq.chunked:
            self._send_body(rq, b"0\r\n\r\n")
        rq.body_done = True
        conn = rq.conn
        if conn is not None and conn.sink is self:
            conn.end_request()
        elif rq.tee is not None and rq.tee.hold == WAIT_BODY and rq is self.cur:
            self._body_complete(rq)

    def _send_body(self, rq: Request, data: bytes) -> None:
        guard = rq.guard
        if guard is not None and guard.kept is not None:  # may be sent again, to legacy
            guard.keep(data, self.gateway.settings.pending_body_limit)
        conn = rq.conn
        if conn is not None:
            if conn.sink is self or conn.tunnel:
                conn.send(data)
        elif rq.pending is not None:  # upstream connection not open yet: buffer, bounded
            rq.pending.append(data)
            rq.pending_size += len(data)
            if rq.pending_size > self.gateway.settings.pending_body_limit and not self.up_paused:
                if rq.tee is not None and rq.tee.hold and rq is self.cur:  # would pause: held no longer
                    return self._give_up(rq, "write_body")
                self.up_paused = True
                self._update_reading()

    def _parser_upgraded(self, rest: bytes) -> None:
        rq = self.cur if self.cur is not None and self.cur.websocket else None
        if rq is None and self.queue and self.queue[-1].websocket:
            rq = self.queue[-1]
        if rq is not None:
            self.upgrading = rq
            if self.state < UPGRADE:
                self.state = UPGRADE
            self._update_reading()
            if rest:
                self._send_body(rq, rest)
            return
        # An Upgrade we do not support (h2c...): the header was dropped, carry on as plain HTTP/1.1.
        self._new_parser()
        if rest:
            self.data_received(rest)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer a request we will not forward (after any in-flight one) and stop reading."""
        self.refusal = None
        if self.state < CLOSING:
            self.state = CLOSING
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
