"""The buffered request of an `UpstreamPool`: one whole request out, one whole response back.

Used by shadowing (on a pool of its own) through `UpstreamPool.fetch`; it runs on the same connection
machinery and response reader as the streaming data path, with a sink that collects the response into
a future. It needs only a `ConnSource` (the pool imports this module, not the other way round).
"""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.http1.capped import NO_CAP, overflow, whole
from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers
from proxy.upstream.conn import ConnSource, ResponseSink, UpConn
from proxy.upstream.request import IDEMPOTENT, build_request

__all__ = ["IDEMPOTENT", "build_request", "fetch"]  # the builder is re-exported for older imports


async def fetch(
    pool: ConnSource,
    method: str,
    path_qs: str,
    headers: Headers,
    body: bytes,
    timeout: float,  # noqa: ASYNC109  # the documented contract; enforced with timeout_at below
    body_cap: int = NO_CAP,
) -> tuple[int, Headers, bytes]:
    """Send one buffered request on ``pool`` and read the whole response; see `UpstreamPool.fetch`.

    A body longer than ``body_cap`` comes back as a `proxy.http1.capped.Capped` (its head and hash).
    """
    loop = asyncio.get_running_loop()
    verb = method.upper().encode("ascii")
    message = build_request(pool, method, path_qs, headers, body)
    end = loop.time() + timeout
    for attempt in (0, 1):
        conn = pool.acquire()
        if conn is None:
            conn = await pool.connect(max(0.0, end - loop.time()))
        sink = _BufferSink(loop.create_future(), body_cap)
        conn.start(sink, message, verb == b"HEAD", True, False)
        conn.timeout = max(0.0, end - loop.time())
        conn.deadline = pool.clock + conn.timeout
        try:
            async with asyncio.timeout_at(end):
                return await sink.future
        except _Retry as e:
            if attempt or verb not in IDEMPOTENT:
                raise e.error from None
        except TimeoutError:
            conn.detach()
            raise UpstreamError(
                "timeout", f"upstream {pool.name} sent no complete response within {timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            conn.detach()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


class _Retry(Exception):
    def __init__(self, error: UpstreamError) -> None:
        self.error = error


class _BufferSink(ResponseSink):
    """Collects one response for `UpstreamPool.fetch`."""

    __slots__ = ("body", "cap", "future", "hasher", "headers", "size", "status")

    def __init__(self, future: asyncio.Future[tuple[int, Headers, bytes]], cap: int) -> None:
        self.future = future
        self.cap = cap
        self.status = 0
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.size = 0
        self.hasher: Any = None

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        pass

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        self.status = status
        self.headers = list(headers)

    def on_resp_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
            return
        self.body.append(chunk)
        if self.size > self.cap:
            self.hasher = overflow(self.body, self.cap)

    def on_resp_done(self) -> None:
        if not self.future.done():
            self.future.set_result((self.status, self.headers, whole(self.body, self.hasher, self.size)))

    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None:
        if not self.future.done():
            self.future.set_exception(_Retry(exc) if retryable else exc)

    def on_upgrade(self, conn: UpConn, rest: bytes) -> None:
        conn.detach()

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_tunnel_closed(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def up_pause_writing(self) -> None:
        pass

    def up_resume_writing(self) -> None:
        pass
