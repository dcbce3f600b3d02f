"""Shared helpers of the data-path tests (a module with its own name, so test files import it safely)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.server.gateway import Gateway
from proxy.server.listener import GatewayServer


@dataclass
class RunningGateway:
    """A started gateway: its port, state and server."""

    port: int
    gateway: Gateway
    server: GatewayServer


def routes_yaml(legacy_port: int, new_port: int, *, legacy_opts: str = "", new_opts: str = "",
                routes: str = "routes: []\n", legacy_base: str = "") -> str:  # fmt: skip
    """A routes file with ``legacy`` and ``new`` on loopback ports (extra options inside the braces)."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "http://127.0.0.1:{legacy_port}{legacy_base}"{legacy_opts}}}\n'
        f'  new: {{url: "http://127.0.0.1:{new_port}"{new_opts}}}\n'
        "default: legacy\n" + routes
    )


GatewayFactory = Callable[..., Awaitable[RunningGateway]]
