"""The listening side of the data path: `GatewayServer` accepts client connections for a `Gateway`.

It owns the listening socket, the set of live connections, the periodic sweep (client idle and header
timeouts, and the coarse clock the connections read), the memoised route lookups, and graceful draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Mapping

from proxy.routing.paths import BadPath, canonicalise
from proxy.routing.table import Match, RouteTable
from proxy.server.connection import ClientProtocol
from proxy.server.forwarding import Forwarder
from proxy.server.gateway import Gateway
from proxy.server.request import Refusal
from proxy.upstream.pool import UpstreamPool

__all__ = ["GatewayServer", "start_server"]

SWEEP_INTERVAL = 1.0
# (query, match, pool, upstream request line + Host, method as str)
RouteHit = tuple[str, Match, UpstreamPool, bytes, str]
ROUTE_CACHE_SIZE = 4096


class GatewayServer:
    """The listening side: accepts connections for a `Gateway`, sweeps timeouts, drains on stop."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.forwarder = Forwarder(gateway.settings)
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time()
        self.connections: set[ClientProtocol] = set()
        self.active_requests = 0
        self.tunnels = 0  # WebSocket tunnels open: a drain waits for them too, up to its deadline
        self.draining = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        self._route_cache: dict[tuple[bytes, bytes], RouteHit] = {}
        self._cache_table: RouteTable | None = None
        self._cache_pools: Mapping[str, UpstreamPool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start accepting on ``sock`` (already bound and listening) or on ``host:port``."""
        if sock is not None:
            self._server = await self.loop.create_server(lambda: ClientProtocol(self), sock=sock)
        else:
            self._server = await self.loop.create_server(
                lambda: ClientProtocol(self), host, port, backlog=1024, reuse_address=True
            )
        self._timer = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    @property
    def port(self) -> int:
        """The port accepted on (useful after binding port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def route(
        self, table: RouteTable, pools: Mapping[str, UpstreamPool], method: bytes, url: bytes
    ) -> RouteHit:
        """Route a request target: (query, match, pool, request-line-and-Host prefix, method str), memoised.

        Memoised per (table, pools) pair, which `Gateway.set_table` swaps together: hot paths repeat, and
        canonicalising, matching and encoding the upstream target cost more than the dict lookup.
        Raises `Refusal` (400) for a path `canonicalise` refuses; refusals are not memoised.
        """
        cache = self._route_cache
        if self._cache_table is not table or self._cache_pools is not pools:
            cache.clear()
            self._cache_table = table
            self._cache_pools = pools
        key = (method, url)
        hit = cache.get(key)
        if hit is None:
            try:
                path, query = canonicalise(url)
            except BadPath as e:
                raise Refusal(400, f"bad request path: {e}") from None
            method_str = method.decode("ascii")  # llhttp accepts only known (ASCII) method names
            match = table.match(method_str, path)
            target = match.route.target
            pool = pools.get(target)
            if pool is None:  # pragma: no cover - the table validates its targets
                raise Refusal(502, f"route {match.route.name} names an unknown upstream {target}")
            upstream_target = pool.base_path + match.forward_path.encode("utf-8")
            if query:
                upstream_target += b"?" + query.encode("utf-8")
            prefix = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, upstream_target, pool.hostport)
            hit = (query, match, pool, prefix, method_str)
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()  # crude but bounded; refills with what is hot now
            cache[key] = hit
        return hit

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run a coroutine as a task that is referenced until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sweep(self) -> None:
        self.clock = now = self.loop.time()
        settings = self.gateway.settings
        idle_before = now - settings.client_idle_timeout
        head_before = now - settings.header_timeout
        for conn in list(self.connections):
            if conn.cur is not None or conn.tunnel is not None or conn.closed:
                continue
            if conn.in_head and conn.head_started < head_before:
                conn._refuse(Refusal(408, "the request head took too long to arrive"))
            elif not conn.in_head and conn.parsing is None and conn.last_io < idle_before:
                conn.close()
        self._timer = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def start_draining(self) -> None:
        """Stop accepting; close idle connections now and busy ones after their current response."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.cur is None and conn.tunnel is None and conn.parsing is None and not conn.in_head:
                conn.close()
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
            if conn.transport is not None:
                conn.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(
    gateway: Gateway, sock: socket.socket | None = None, host: str = "127.0.0.1", port: int = 0
) -> GatewayServer:
    """Create a `GatewayServer` for ``gateway`` and start accepting (on ``sock`` or ``host:port``)."""
    server = GatewayServer(gateway)
    await server.start(sock, host, port)
    return server
