"""What a client connection needs from the server that accepted it, and what the server needs back.

`proxy.server.listener.GatewayServer` subclasses `ConnectionHost`; `proxy.server.connection.ClientProtocol`
implements the `Swept` Protocol. Both live here, below both modules, so neither imports the other's module
for its types and the listener alone imports the connection (to make one per accepted socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Protocol

from proxy.server.forwarding import Forwarder
from proxy.server.gateway import Gateway
from proxy.server.routecache import RouteCache

__all__ = ["ConnectionHost", "Swept"]


class Swept(Protocol):
    """A live client connection as its server sees it: swept for timeouts, drained, aborted."""

    def sweep(self, idle_before: float, head_before: float, body_before: float) -> None:
        """Refuse a head or body too slow to arrive (408); close if idle since before ``idle_before``."""

    def close_if_idle(self) -> None:
        """Close now if no request is in flight or being read (draining)."""

    def abort(self) -> None:
        """Drop the connection now, without waiting for its write buffer."""


class ConnectionHost:
    """The server state a connection reads and updates (attributes, read on the hot path).

    `proxy.server.listener.GatewayServer` is the one subclass. A base class, not a Protocol: compiled
    code reads a Protocol's attributes by name (~180 instructions each), a compiled class's directly, and
    a request reads and updates several of these.
    """

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, clock: float) -> None:
        self.gateway = gateway
        self.forwarder = Forwarder(gateway.settings)
        self.routes = RouteCache()
        self.loop = loop
        self.clock = clock  # coarse loop time, refreshed by the sweep: connections' idle and head stamps
        self.draining = False
        self.max_connections = gateway.settings.max_connections  # 0: no limit
        self.active_requests = 0
        self.tunnels = 0  # WebSocket tunnels open: a drain waits for them too, up to its deadline
        self.connections: set[Swept] = set()

    def check_drained(self) -> None:
        """Set the drained event once draining and no request or tunnel is in flight."""
        raise NotImplementedError

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run a coroutine as a task that is referenced until it ends."""
        raise NotImplementedError
