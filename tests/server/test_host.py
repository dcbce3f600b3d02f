"""Host upstream (issue 10): the client's by default, the upstream's with ``host: upstream``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from support.gwkit import GatewayFactory, routes_yaml
from support.upstreams import EchoUpstream, RawClient

from proxy.routing.table import parse_routes
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.sender import PoolSender, Sent, sender_for


def hosts(summary: dict[str, object], name: str = "Host") -> list[str]:
    """Every value of header ``name`` the echo upstream received."""
    raw = summary["headers"]
    assert isinstance(raw, list)
    return [str(v) for k, v in raw if str(k).lower() == name.lower()]


async def test_the_client_host_is_forwarded_by_default(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """Apps build absolute URLs from Host: the upstream gets the client's (and X-Forwarded-Host)."""
    gw = await make_gateway(routes_yaml(echo.port, echo.port))
    client = await RawClient.open(gw.port)
    for _ in range(2):  # the second answer comes from the route cache: still the client's Host
        echoed = (await client.request("GET", "/h")).json()
        assert hosts(echoed) == ["gateway.test"]
        assert hosts(echoed, "X-Forwarded-Host") == ["gateway.test"]
    # The rare path (a hop-by-hop header to strip) forwards it the same way.
    echoed = (await client.request("GET", "/h", {"Connection": "keep-alive, X-Hop", "X-Hop": "1"})).json()
    assert hosts(echoed) == ["gateway.test"]
    client.close()


async def test_host_upstream_sends_the_upstreams_own(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """``host: upstream``: the upstream's host and port, and the client's in X-Forwarded-Host only."""
    gw = await make_gateway(routes_yaml(echo.port, echo.port, legacy_opts=", host: upstream"))
    client = await RawClient.open(gw.port)
    echoed = (await client.request("GET", "/h")).json()
    assert hosts(echoed) == [f"127.0.0.1:{echo.port}"]
    assert hosts(echoed, "X-Forwarded-Host") == ["gateway.test"]
    client.close()


async def test_an_http10_request_without_host_gets_the_upstreams(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """HTTP/1.0 may omit Host: the upstream then gets its own host and port, never an empty Host."""
    gw = await make_gateway(routes_yaml(echo.port, echo.port))
    client = await RawClient.open(gw.port)
    await client.send(b"GET /h HTTP/1.0\r\n\r\n")
    echoed = (await client.response()).json()
    assert hosts(echoed) == [f"127.0.0.1:{echo.port}"]
    client.close()


async def _copy_host(pool: UpstreamPool, method: str, body: bytes) -> list[str]:
    sender = sender_for(pool, asyncio.get_running_loop())
    assert isinstance(sender, PoolSender)
    done: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
    send: Callable[..., None] = sender.send
    try:
        send(method, "/h", [], body, 5.0, done.set_result, None, b"public.test")
        sent = await done
        assert sent.result is not None, sent.error
        return hosts(json.loads(sent.result[2]))
    finally:
        sender.close(abort=True)
        pool.close()


async def test_shadow_copies_carry_the_client_host_like_the_primary(echo: EchoUpstream) -> None:
    """A shadow copy gets the Host its primary got (the client's), so Location headers compare equal."""
    for opts, expected in (("", "public.test"), (", host: upstream", f"127.0.0.1:{echo.port}")):
        table = parse_routes(routes_yaml(echo.port, echo.port, new_opts=opts), "t.yaml")
        for method, body in (("GET", b""), ("POST", b"{}")):  # pipelined and buffered
            assert await _copy_host(UpstreamPool(table.upstreams["new"]), method, body) == [expected]
