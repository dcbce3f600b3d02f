"""Fixtures for the data-path tests: loopback upstreams and an in-process gateway on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.routing.table import parse_routes
from proxy.server.gateway import Gateway, GatewaySettings, RequestObserver, ShadowSink
from proxy.server.listener import start_server
from proxy.upstream.pool import UpstreamPool
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, Handler, RawUpstream


@pytest.fixture
async def echo() -> AsyncIterator[EchoUpstream]:
    """The echo upstream on a loopback port."""
    upstream = await EchoUpstream().start()
    yield upstream
    await upstream.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[RawUpstream]]]:
    """Start raw upstreams running a given handler; all closed at the end."""
    started: list[RawUpstream] = []

    async def start(handler: Handler) -> RawUpstream:
        upstream = await RawUpstream(handler).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.close()


@pytest.fixture
async def make_gateway() -> AsyncIterator[GatewayFactory]:
    """Build and start gateways from routes YAML text; all stopped at the end.

    ``clock`` is the listener's (client idle and header timeouts), ``upstream_clock`` the upstream
    pools' (response deadlines and stalls): a test that injects one moves it and calls the sweep;
    ``breaker_clock`` the circuit breakers' (cool-downs, failure-rate windows).
    """
    running: list[RunningGateway] = []

    async def make(
        yaml_text: str,
        settings: GatewaySettings | None = None,
        observer: RequestObserver | None = None,
        shadow: ShadowSink | None = None,
        access_log: Callable[..., None] | None = None,
        clock: Callable[[], float] | None = None,
        upstream_clock: Callable[[], float] | None = None,
        breaker_clock: Callable[[], float] | None = None,
    ) -> RunningGateway:
        table = parse_routes(yaml_text, "test.yaml")
        gateway = Gateway(
            table, settings, observer=observer, shadow=shadow, access_log=access_log, clock=breaker_clock
        )
        if upstream_clock is not None:
            # Pools on the test's clock: it moves time and calls `pool.sweep()` (none has been used yet).
            gateway.pools = {
                name: UpstreamPool(pool.spec, clock=upstream_clock) for name, pool in gateway.pools.items()
            }
        server = await start_server(gateway, clock=clock)
        handle = RunningGateway(server.port, gateway, server)
        running.append(handle)
        return handle

    yield make
    for handle in running:
        await handle.server.close()
        handle.gateway.close()


@pytest.fixture
async def gw(make_gateway: GatewayFactory, echo: EchoUpstream) -> RunningGateway:
    """A gateway whose both upstreams are the echo upstream."""
    return await make_gateway(routes_yaml(echo.port, echo.port))
