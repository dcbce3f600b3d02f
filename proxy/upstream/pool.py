"""`UpstreamPool`: pooled HTTP/1.1 keep-alive connections to one upstream (asyncio Protocol + httptools).

The hot path is callback-only: a request takes an idle connection from a LIFO list (the most recently
used socket is the warmest and the least likely to have been closed by the upstream), writes its head
with one ``transport.write`` and receives the response through a *sink* (see `ResponseSink`). Only a
new connection costs an ``await``. There is no timer per request: a periodic sweep per pool checks the
response-header deadline of active connections, fails a response whose body stops arriving for as long
(time that a slow client makes us stop reading does not count), and expires idle connections.

`fetch` is the buffered variant of the same machinery, used by shadowing on a pool of its own.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol, cast

import httptools

from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec
from proxy.upstream.fetch import fetch

__all__ = ["Headers", "ResponseSink", "UpConn", "UpstreamPool"]

Headers = list[tuple[bytes, bytes]]

SWEEP_INTERVAL = 0.1  # deadline precision; a sweep is a few attribute reads per active connection
IDLE_TIMEOUT = 30.0  # below Node's and aiohttp's keep-alive defaults, so we rarely race their close


class ResponseSink(Protocol):
    """Receives one response from an `UpConn` (implemented by the client protocol and by `fetch`)."""

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def on_resp_body(self, chunk: bytes) -> None: ...
    def on_resp_done(self) -> None: ...
    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None: ...
    def on_upgrade(self, conn: UpConn, rest: bytes) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_closed(self) -> None: ...
    def flush(self) -> None: ...
    def up_pause_writing(self) -> None: ...
    def up_resume_writing(self) -> None: ...


class UpConn(asyncio.Protocol):
    """One upstream connection; carries one request at a time, then returns to its pool."""

    __slots__ = (
        "closed",
        "deadline",
        "got_bytes",
        "got_head",
        "headers",
        "idle_since",
        "in_interim",
        "is_head",
        "last_io",
        "parser",
        "pool",
        "reason",
        "req_done",
        "reused",
        "sink",
        "status",
        "timeout",
        "transport",
        "tunnel",
        "upgrade_ok",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.headers: Headers = []
        self.reason = b""
        self.is_head = False
        self.got_bytes = False
        self.got_head = False
        self.reused = False
        self.closed = False
        self.status = 0
        self.in_interim = False
        self.tunnel = False
        self.upgrade_ok = False
        self.req_done = True
        self.idle_since = 0.0
        self.last_io = 0.0
        self.deadline = 0.0
        self.timeout = 0.0

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel:
            if sink is not None:
                sink.on_tunnel_data(data)
            return
        if sink is None:  # bytes on an idle connection: the upstream is confused, do not reuse
            self.abort()
            return
        self.got_bytes = True
        self.last_io = self.pool.clock
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data[e.args[0] :])
            return
        except httptools.HttpParserError as e:
            self._fail(UpstreamError("protocol", f"upstream {self.pool.name} sent an invalid response: {e}"))
            return
        sink = self.sink
        if sink is not None:
            sink.flush()

    def eof_received(self) -> bool:
        return False  # close our side too: HTTP/1.1 upstreams do not half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.active.discard(self)
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        if self.tunnel:
            sink.on_tunnel_closed()
        elif self.got_head and self._eof_delimited():  # a body delimited by the connection's end ends here
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

    # --- httptools callbacks (no on_message_begin: `start` and the end of an interim response reset the
    # head, which saves a callback per response)
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.got_head or self.in_interim:  # after the head: trailers, which are dropped
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        sink = self.sink
        if sink is None:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.in_interim = True
            sink.on_resp_interim(status, self.reason, self.headers)
            return
        self.in_interim = False
        if status == 101:
            if not self.upgrade_ok:
                raise _BadResponse("101 Switching Protocols to a request that did not ask to upgrade")
            self.tunnel = True  # from here on the bytes are the upgraded protocol's (see _upgrade)
        self.got_head = True
        self.status = status
        sink.on_resp_head(status, self.reason, self.headers)
        if self.is_head and self.sink is sink and status != 101:
            # llhttp cannot be told "no body follows" from Python: end the message by hand.
            keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._complete(keep_alive)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_resp_body(body)

    def on_message_complete(self) -> None:
        if self.in_interim:
            self.in_interim = False
            self.headers = []
            self.reason = b""
            return
        if self.sink is None or self.tunnel or not self.got_head:
            return
        self._complete(self.parser.should_keep_alive())

    # --- internals
    def _eof_delimited(self) -> bool:
        """Whether the response being read ends with the connection (neither Content-Length nor chunked).

        Asked only when the connection closes mid-response, so the hot path never scans for framing here.
        """
        status = self.status
        if status < 200 or status in (204, 304) or self.is_head or self.tunnel:
            return False
        for name, value in self.headers:
            size = len(name)  # a cheap filter before lower-casing: 14 and 17 are the framing names
            if size == 14 and name.lower() == b"content-length":
                return False
            if (
                size == 17
                and name.lower() == b"transfer-encoding"
                and value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            ):
                return False
        return True

    def _upgrade(self, rest: bytes) -> None:
        sink = self.sink
        if sink is None or not self.tunnel:
            self.abort()
            return
        self.pool.active.discard(self)  # a tunnel has no deadline and never returns to the pool
        sink.on_upgrade(self, rest)

    def _complete(self, keep_alive: bool) -> None:
        sink = self.sink
        self.sink = None
        self.pool.active.discard(self)
        if keep_alive and self.req_done and not self.closed:
            self.pool._release(self)
        else:
            self.abort(graceful=True)
        if sink is not None:
            sink.on_resp_done()

    def _fail(self, exc: UpstreamError) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.on_resp_error(exc, False)

    # --- used by callers
    def start(self, sink: ResponseSink, head: bytes, is_head: bool, req_done: bool, upgrade: bool) -> None:
        """Attach a sink and send a request head (plus any body bytes already at hand)."""
        pool = self.pool
        self.sink = sink
        self.headers = []
        self.reason = b""
        self.is_head = is_head
        self.got_bytes = False
        self.got_head = False
        self.upgrade_ok = upgrade
        self.req_done = req_done
        self.last_io = pool.clock
        self.timeout = pool.total_timeout
        self.deadline = pool.clock + self.timeout
        pool.active.add(self)
        assert self.transport is not None
        self.transport.write(head)

    def send(self, data: bytes) -> None:
        """Send request body bytes (the response-header deadline waits while the body flows)."""
        self.last_io = self.pool.clock
        assert self.transport is not None
        self.transport.write(data)

    def end_request(self) -> None:
        """The request body is complete: the response-header deadline starts now."""
        self.req_done = True
        self.deadline = self.pool.clock + self.timeout

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


class _BadResponse(Exception):
    """Raised inside a parser callback; surfaces as an HttpParserError (-> protocol error)."""


class UpstreamPool:
    """Keep-alive connections to one upstream; ``spec.pool_size`` idle connections are kept at most."""

    def __init__(self, spec: UpstreamSpec, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.spec = spec
        self.name = spec.name
        default_port = 443 if spec.scheme == "https" else 80
        authority = spec.host if spec.port == default_port else f"{spec.host}:{spec.port}"
        if ":" in spec.host and not spec.host.startswith("["):
            authority = f"[{spec.host}]:{spec.port}"
        self.hostport = authority.encode("idna")
        self.base_path = spec.base_path.rstrip("/").encode("ascii")
        self.total_timeout = spec.total_timeout
        self.connect_timeout = spec.connect_timeout
        self.max_idle = spec.pool_size
        self.idle_timeout = idle_timeout
        self.idle: list[UpConn] = []  # LIFO
        self.active: set[UpConn] = set()
        self.closed = False
        self.clock = 0.0  # coarse loop time, refreshed by the sweep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if spec.scheme == "https" else None

    def __repr__(self) -> str:
        return f"<UpstreamPool {self.name} {self.spec.url} idle={len(self.idle)} active={len(self.active)}>"

    def acquire(self) -> UpConn | None:
        """An idle connection, or None (then `connect`); synchronous, the hot path."""
        if self._timer is None:
            self._start_sweep()
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, limit: float | None = None) -> UpConn:
        """Open a new connection; raise `UpstreamError` ``connect`` or ``timeout``."""
        if self._timer is None:
            self._start_sweep()
        loop = asyncio.get_running_loop()
        limit = self.connect_timeout if limit is None else min(limit, self.connect_timeout)
        spec = self.spec
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: UpConn(self),
                    spec.host,
                    spec.port,
                    ssl=self._ssl,
                    server_hostname=spec.host if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamError(
                "timeout",
                f"connecting to upstream {self.name} ({spec.host}:{spec.port}) took longer than {limit:g}s",
            ) from None
        except OSError as e:
            raise UpstreamError(
                "connect",
                f"cannot connect to upstream {self.name} ({spec.host}:{spec.port}): {e.strerror or e}; "
                "is it running?",
            ) from None
        return conn

    def _release(self, conn: UpConn) -> None:
        transport = conn.transport
        assert transport is not None
        if not transport.is_reading():  # paused for backpressure when the message ended
            transport.resume_reading()
        if self.closed or len(self.idle) >= self.max_idle:
            conn.abort(graceful=True)
            return
        conn.idle_since = self.clock
        self.idle.append(conn)

    def _start_sweep(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.clock = loop.time()
        self._timer = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        self.clock = now = loop.time()
        if self.idle:
            expired = now - self.idle_timeout
            keep = [c for c in self.idle if not c.closed and c.idle_since > expired]
            for conn in self.idle:
                if not conn.closed and conn.idle_since <= expired:
                    conn.abort(graceful=True)
            self.idle[:] = keep
        if self.active:
            for conn in list(self.active):
                if conn.tunnel:
                    continue
                if conn.got_head:
                    # Mid-body: time out only if the upstream went silent while we were reading (a slow
                    # client pauses our reading; that time does not count).
                    transport = conn.transport
                    if transport is not None and not transport.is_reading():
                        conn.last_io = now
                    elif now - conn.last_io > conn.timeout:
                        conn._fail(
                            UpstreamError(
                                "timeout",
                                f"upstream {self.name} stopped sending its response for {conn.timeout:g}s",
                            )
                        )
                    continue
                if conn.req_done:
                    late = now > conn.deadline
                else:  # still uploading: time out only if the body stopped flowing
                    late = now - conn.last_io > conn.timeout
                if late:
                    conn._fail(
                        UpstreamError(
                            "timeout",
                            f"upstream {self.name} sent no response within {conn.timeout:g}s",
                        )
                    )
        if self.active or self.idle:
            self._timer = loop.call_later(SWEEP_INTERVAL, self._sweep)
        else:
            self._timer = None  # restarted by the next acquire/connect

    def close(self) -> None:
        """Retire the pool: idle connections close now, active ones when their response ends."""
        self.closed = True
        for conn in self.idle:
            conn.abort(graceful=True)
        self.idle.clear()

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: Headers,
        body: bytes,
        timeout: float,  # noqa: ASYNC109  # the documented contract; enforced with timeout_at
    ) -> tuple[int, Headers, bytes]:
        """Send one buffered request and read the whole response (see `proxy.fetch.fetch`).

        ``path_qs`` is the path (the pool's base path is prefixed) plus ``?query``. ``headers`` may
        carry Host/framing headers: they are replaced. A GET/HEAD/OPTIONS on a pooled connection that
        dies before any response byte is retried once on a new one. Raises `UpstreamError`.
        """
        return await fetch(self, method, path_qs, headers, body, timeout)
