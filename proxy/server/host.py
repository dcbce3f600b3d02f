"""What a client connection needs from the server that accepted it, and what the server needs back.

`proxy.server.listener.GatewayServer` implements `ConnectionHost`; `proxy.server.connection.ClientProtocol`
implements `Swept`. Both Protocols live here, below both modules, so neither imports the other's module
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


class ConnectionHost(Protocol):
    """The server state a connection reads and updates (attributes, read on the hot path)."""

    gateway: Gateway
    forwarder: Forwarder
    routes: RouteCache
    loop: asyncio.AbstractEventLoop
    clock: float  # coarse loop time, refreshed by the sweep: the connections' idle and head timestamps
    draining: bool
    max_connections: int  # 0: no limit
    active_requests: int
    tunnels: int
    connections: set[Swept]

    def check_drained(self) -> None:
        """Set the drained event once draining and no request or tunnel is in flight."""

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        """Run a coroutine as a task that is referenced until it ends."""
