"""`UpstreamPool`: pooled HTTP/1.1 keep-alive connections (`UpConn`) to one upstream.

The hot path is callback-only: a request takes an idle connection from a LIFO list (the most recently
used socket is the warmest and the least likely to have been closed by the upstream), writes its head
with one ``transport.write`` and receives the response through a *sink* (see `ResponseSink`). Only a
new connection costs an ``await``. There is no timer per request: a periodic sweep per pool checks the
response-header deadline of active connections, fails a response whose body stops arriving for as long
(time that a slow client makes us stop reading does not count), and expires idle connections.

`fetch` is the buffered variant of the same machinery, used by shadowing on a pool of its own. The
connection itself, and the response reader under it, are in `proxy.upstream.conn` and `proxy.http1`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.http1.capped import NO_CAP
from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers
from proxy.routing.table import UpstreamSpec
from proxy.upstream.conn import ConnOwner, ResponseSink, UpConn
from proxy.upstream.connect import authority, open_connection, tls_context
from proxy.upstream.fetch import fetch

# Headers, ResponseSink and UpConn are re-exported: the server layer has always imported them from here.
__all__ = ["Headers", "ResponseSink", "UpConn", "UpstreamPool"]

SWEEP_INTERVAL = 0.1  # deadline precision; a sweep is a few attribute reads per active connection
IDLE_TIMEOUT = 30.0  # below Node's and aiohttp's keep-alive defaults, so we rarely race their close


class UpstreamPool(ConnOwner):
    """Keep-alive connections to one upstream; ``spec.pool_size`` idle connections are kept at most.

    ``clock`` (seconds, monotonic; default the event loop's time) is what the sweep reads: tests inject
    one they move by hand and call `sweep` instead of waiting for the deadlines in real time.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(spec.name, spec.total_timeout)
        self.spec = spec
        self.hostport = authority(spec)
        # Forward the client's Host (apps build absolute URLs from it) unless told to send our own.
        self.client_host = spec.host_header == "client"
        self.base_path = spec.base_path.rstrip("/").encode("ascii")
        self.connect_timeout = spec.connect_timeout
        self.max_idle = spec.pool_size
        self.idle_timeout = idle_timeout
        self.idle: list[UpConn] = []  # LIFO
        self.closed = False
        self._time = clock  # None: the running loop's, set when the sweep starts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ssl = tls_context(spec)

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
        limit = self.connect_timeout if limit is None else min(limit, self.connect_timeout)
        conn = UpConn(self)
        await open_connection(asyncio.get_running_loop(), lambda: conn, self.spec, self._ssl, limit)
        return conn

    def _release(self, conn: UpConn) -> None:
        if conn.paused:  # for backpressure when the message ended (a flag: not the transport's by-name call)
            conn.resume_reading()
        if self.closed or len(self.idle) >= self.max_idle:
            conn.abort(graceful=True)
            return
        conn.idle_since = self.clock
        self.idle.append(conn)

    def _start_sweep(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if self._time is None:
            self._time = loop.time
        self.clock = self._time()
        self._timer = loop.call_later(SWEEP_INTERVAL, self._tick)

    def _tick(self) -> None:
        self.sweep()
        if self.active or self.idle:
            assert self._loop is not None
            self._timer = self._loop.call_later(SWEEP_INTERVAL, self._tick)
        else:
            self._timer = None  # restarted by the next acquire/connect

    def sweep(self) -> None:
        """Refresh the coarse clock, fail late or stalled responses, close expired idle connections.

        Runs every `SWEEP_INTERVAL` seconds once the pool is in use; tests with an injected clock call it.
        """
        assert self._time is not None, "the sweep starts with the pool's first acquire or connect"
        self.clock = now = self._time()
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
                    if conn.paused:
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
        body_cap: int = NO_CAP,
    ) -> tuple[int, Headers, bytes]:
        """Send one buffered request and read the whole response (see `proxy.fetch.fetch`).

        ``path_qs`` is the path (the pool's base path is prefixed) plus ``?query``. ``headers`` may
        carry Host/framing headers: they are replaced. A GET/HEAD/OPTIONS on a pooled connection that
        dies before any response byte is retried once on a new one. A body over ``body_cap`` bytes
        comes back as a `proxy.http1.capped.Capped` (its head and hash). Raises `UpstreamError`.
        """
        return await fetch(self, method, path_qs, headers, body, timeout, body_cap)
