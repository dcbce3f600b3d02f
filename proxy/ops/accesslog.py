"""The gateway's access log: one JSON line per request, formatted without logging records, written in batches.

At tens of thousands of requests a second, a ``logging`` record, a handler lock and a write per line
cost most of the gateway's per-request budget. :class:`AccessLog` formats a line with one orjson call,
appends it to a buffer, and writes the buffer about every ``interval`` seconds or once it holds
``flush_bytes``; :meth:`AccessLog.drain` flushes it on shutdown.

The lines have the shape of :func:`proxy.logs.access` lines (``ts``, ``level``, ``logger`` =
``strangler.access``, ``msg`` = ``request``, ``pid``, then the request's fields), so log readers see no
difference. The output never blocks the event loop: writes go through a private non-blocking handle (see
:mod:`proxy.ops.logsink`); lines that find the output full beyond ``max_backlog`` bytes, or closed, are
dropped and counted in ``strangler_access_log_dropped_total``.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable

import orjson
from prometheus_client import Counter
from prometheus_client.registry import REGISTRY

from proxy.ops.logsink import Output
from proxy.server.gateway import AccessRecord

__all__ = ["DROPPED", "AccessLog"]

DROPPED = Counter(
    "strangler_access_log_dropped",
    "Access-log lines dropped because the log output was full (reader too slow) or closed.",
    registry=REGISTRY,
)

_NEWLINE = orjson.OPT_APPEND_NEWLINE


class AccessLog:
    """A buffered JSON-lines access log on a file descriptor (stderr by default); one per process.

    Create it on the event loop that serves requests. Calling it with an
    :class:`~proxy.gateway.AccessRecord` (the Gateway hook) never blocks and never raises for I/O.
    """

    def __init__(
        self,
        fd: int = 2,
        *,
        interval: float = 0.1,
        flush_bytes: int = 64 * 1024,
        max_backlog: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._out = Output(fd)
        self._interval = interval
        self._flush_bytes = flush_bytes
        self._clock = clock
        self._pid = os.getpid()
        # Unwritten lines, oldest first. A bytearray rather than a list of lines: keeping hundreds of
        # orjson results alive until a flush made each dumps() about 4x slower (measured: allocator).
        self._buf = bytearray()
        self._limit = max_backlog  # drop lines once this many bytes wait; 0 once the output is closed
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False  # the output is full: a writability callback (or a timer) will flush
        self._watching = False  # add_writer is registered on the output
        self.dropped = 0
        self.written = 0

    def __call__(self, record: AccessRecord) -> None:
        """The Gateway hook: buffer one :class:`AccessRecord` as one JSON line."""
        if len(self._buf) >= self._limit:
            self._drop(1)
            return
        # One orjson call on a dict literal: measured as fast as a bytes template, and it escapes
        # every string (paths and request ids come from clients).
        self._append(
            orjson.dumps(
                {
                    "ts": self._clock(),
                    "level": "info",
                    "logger": "strangler.access",
                    "msg": "request",
                    "pid": self._pid,
                    "request_id": record.request_id,
                    "method": record.method,
                    "path": record.path,
                    "status": record.status,
                    "route": record.route,
                    "target": record.target,
                    "duration_ms": round(record.duration_s * 1000.0, 3),
                    "bytes_in": record.bytes_in,
                    "bytes_out": record.bytes_out,
                    "peer": record.peer,
                },
                option=_NEWLINE,
            )
        )

    def _append(self, line: bytes) -> None:
        buf = self._buf
        buf += line
        if len(buf) >= self._flush_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write what the output takes now without blocking; the rest waits for it to become writable."""
        if self._waiting:  # the writability callback (or the retry timer) flushes
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        buf = self._buf
        if not buf:
            return
        written, closed = self._out.write_lines(buf)
        if closed:
            self._close_output()
            return
        self.written += buf.count(b"\n", 0, written)
        if written == len(buf):
            buf.clear()
        else:
            del buf[:written]
            self._wait_writable()

    def _wait_writable(self) -> None:
        self._waiting = True
        try:
            self._loop.add_writer(self._out.fd, self._writable)
            self._watching = True
        except (OSError, NotImplementedError, ValueError):
            # Not pollable (a regular file never is full anyway): retry on a timer instead.
            self._timer = self._loop.call_later(self._interval, self._writable)

    def _stop_waiting(self) -> None:
        self._waiting = False
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._out.fd)

    def _writable(self) -> None:
        self._stop_waiting()
        self.flush()

    def _close_output(self) -> None:
        """The output is gone (EPIPE, EBADF, ...): drop what is buffered and every later line."""
        self._limit = 0
        self._discard()

    def _discard(self) -> None:
        self._drop(self._buf.count(b"\n"))
        self._buf.clear()

    def _drop(self, lines: int) -> None:
        if lines:
            self.dropped += lines
            DROPPED.inc(lines)

    def drain(self, timeout: float = 1.0) -> bool:
        """Write everything buffered, waiting up to ``timeout`` s for a full output (shutdown: blocks).

        Lines the output does not take in time are dropped and counted. True if nothing was dropped.
        Later lines (requests cut off by the drain timeout) are written at once: no timer may fire again.
        """
        self._flush_bytes = 0
        self._writable()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._out.fd, select.POLLOUT)
        while self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poller.poll(max(1, int(left * 1000)))
            self._writable()
        self._stop_waiting()
        clean = not self._buf
        self._discard()
        return clean

    def close(self, timeout: float = 1.0) -> bool:
        """Drain, then release the private output handle; later lines are dropped. True if none was."""
        clean = self.drain(timeout)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._limit = 0
        self._out.close()
        return clean
