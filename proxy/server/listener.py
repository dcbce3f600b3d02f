"""The listening side of the data path: `GatewayServer` accepts client connections for a `Gateway`.

It owns the listening socket, the set of live connections, the periodic sweep (client idle and header
timeouts, and the coarse clock the connections read), the memoised route lookups, and graceful draining.
It is the `proxy.server.host.ConnectionHost` of every `ClientProtocol` it makes. The clock is injectable
(``clock``, default the event loop's) so tests can move time and call `GatewayServer.sweep` instead of
waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

from proxy.server.connection import ClientProtocol
from proxy.server.gateway import Gateway
from proxy.server.host import ConnectionHost

__all__ = ["SWEEP_INTERVAL", "GatewayServer", "start_server"]

SWEEP_INTERVAL = 1.0


class GatewayServer(ConnectionHost):
    """The listening side: accepts connections for a `Gateway`, sweeps timeouts, drains on stop."""

    def __init__(self, gateway: Gateway, clock: Callable[[], float] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._time = clock or loop.time
        super().__init__(gateway, loop, self._time())
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start accepting on ``sock`` (already bound and listening) or on ``host:port``."""
        if sock is not None:
            self._server = await self.loop.create_server(lambda: ClientProtocol(self), sock=sock)
        else:
            self._server = await self.loop.create_server(
                lambda: ClientProtocol(self), host, port, backlog=1024, reuse_address=True
            )
        self._timer = self.loop.call_later(SWEEP_INTERVAL, self._tick)

    @property
    def port(self) -> int:
        """The port accepted on (useful after binding port 0)."""
        assert self._server is not None
        # uvloop's sockets are a list, typeshed says a tuple (which compiled code would check): Any.
        sockets: Any = cast(Any, self._server).sockets
        return int(sockets[0].getsockname()[1])

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run a coroutine as a task that is referenced until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sweep(self) -> None:
        """Refresh the coarse clock; answer 408 to heads (bodies) slower than the header (body) timeout,
        close idle clients.

        Runs every `SWEEP_INTERVAL` seconds; tests with an injected clock call it directly.
        """
        self.clock = now = self._time()
        settings = self.gateway.settings
        idle_before = now - settings.client_idle_timeout
        head_before = now - settings.header_timeout
        body_before = now - settings.body_timeout
        for conn in list(self.connections):
            conn.sweep(idle_before, head_before, body_before)

    def _tick(self) -> None:
        self.sweep()
        self._timer = self.loop.call_later(SWEEP_INTERVAL, self._tick)

    def start_draining(self) -> None:
        """Stop accepting; close idle connections now and busy ones after their current response."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        self.check_drained()

    def check_drained(self) -> None:
        """Set the drained event once draining and no request or tunnel is in flight."""
        if self.draining and self.active_requests <= 0 and self.tunnels <= 0:
            self._drained.set()

    async def drained(self) -> None:
        """Wait until every in-flight request has been answered (after `start_draining`)."""
        await self._drained.wait()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109  # a deadline, not a cancel scope
        """Graceful stop: drain for up to ``timeout`` seconds, then close everything.

        Returns True when every in-flight request finished in time.
        """
        self.start_draining()
        finished = True
        try:
            async with asyncio.timeout(timeout):
                await self.drained()
        except TimeoutError:
            finished = False
        await self.close()
        return finished

    async def close(self) -> None:
        """Stop now: close the listener, every connection and the sweep."""
        if self._server is not None:
            self._server.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self.connections):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(
    gateway: Gateway,
    sock: socket.socket | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] | None = None,
) -> GatewayServer:
    """Create a `GatewayServer` for ``gateway`` and start accepting (on ``sock`` or ``host:port``).

    ``clock`` (seconds, monotonic; default the event loop's time) decides the idle and header timeouts.
    """
    server = GatewayServer(gateway, clock)
    await server.start(sock, host, port)
    return server
