"""Fallback to legacy and the circuit breaker on new, through a real gateway and loopback upstreams."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest
from support.clock import ManualClock
from support.gwkit import GatewayFactory, routes_yaml
from support.upstreams import EchoUpstream, Handler, RawClient, RawUpstream, read_request
from support.waiting import eventually

from proxy.routing.table import Route, parse_routes
from proxy.server.exchange import Exchange
from proxy.server.gateway import AccessRecord, GatewaySettings, ShadowSink

StartRaw = Callable[[Handler], Awaitable[RawUpstream]]


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_route(extra: str) -> str:
    """One route, /api/{rest*} served by new, with ``extra`` route keys (YAML flow, after a comma)."""
    return (
        "routes:\n"
        "  - {name: api, match: {path: '/api/{rest*}'}, target: new" + (f", {extra}" if extra else "") + "}\n"
    )


def paths_seen(upstream: EchoUpstream) -> list[tuple[object, object]]:
    """(method, path) of every request the echo upstream saw, in order."""
    return [(r["method"], r["path"]) for r in upstream.seen.requests]


async def test_connect_refused_serves_get_and_post_from_legacy(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """New not listening: a GET and a POST (with its body) are served by legacy, with the header, under
    legacy's base path, with the client's request id; counted by reason; the access log says legacy."""
    records: list[AccessRecord] = []
    handle = await make_gateway(
        routes_yaml(echo.port, free_port(), legacy_base="/old", routes=api_route("fallback: true")),
        access_log=records.append,
    )
    client = await RawClient.open(handle.port)
    got = await client.request("GET", "/api/users?x=1", {"X-Request-Id": "fb-1"})
    assert got.status == 200
    assert got.header("X-Strangler-Fallback") == "connect"
    assert got.header("X-Request-Id") == "fb-1"
    posted = await client.request("POST", "/api/users", body=b'{"name": "ann"}')
    assert posted.status == 200 and posted.header("X-Strangler-Fallback") == "connect"
    assert paths_seen(echo) == [("GET", "/old/api/users?x=1"), ("POST", "/old/api/users")]
    assert echo.seen.requests[1]["body_len"] == len(b'{"name": "ann"}')
    assert handle.gateway.counters.fallbacks == {("api", "connect"): 2}
    await eventually(lambda: len(records) == 2, what="two access records")
    first = records[0]
    assert (first.request_id, first.target, first.status) == ("fb-1", "legacy", 200)
    client.close()


async def test_fallback_off_answers_502(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """``fallback: false`` on the route: new not listening is the usual 502, legacy sees nothing."""
    yaml_text = routes_yaml(echo.port, free_port(), routes="fallback: true\n" + api_route("fallback: false"))
    handle = await make_gateway(yaml_text)
    client = await RawClient.open(handle.port)
    got = await client.request("GET", "/api/users")
    assert got.status == 502 and got.header("X-Strangler-Fallback") is None
    assert echo.seen.requests == []
    client.close()


async def test_route_to_legacy_is_not_guarded(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A top-level fallback does not apply to routes served by legacy: they carry no guard."""
    handle = await make_gateway(routes_yaml(echo.port, free_port(), routes="fallback: true\nroutes: []\n"))
    assert handle.gateway.guards == {}
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/x")).header("X-Strangler-Fallback") is None
    client.close()


async def test_silent_new_get_falls_back_after_the_timeout_post_gets_504(
    make_gateway: GatewayFactory, echo: EchoUpstream, raw_upstream: StartRaw
) -> None:
    """New accepts but never answers: a GET falls back after the fallback timeout; a POST, which may have
    reached new, is not sent again: it gets new's 504 with its request id."""
    arrived: list[bytes] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        arrived.append(line)
        await asyncio.sleep(30)  # never answers; the test ends first

    new = await raw_upstream(stall)
    yaml_text = routes_yaml(
        echo.port, new.port, new_opts=", timeout: 0.6", routes=api_route("fallback: {timeout: 0.1}")
    )
    handle = await make_gateway(yaml_text)
    client = await RawClient.open(handle.port)
    got = await client.request("GET", "/api/slow")
    assert got.status == 200 and got.header("X-Strangler-Fallback") == "timeout"
    assert arrived == [b"GET /api/slow HTTP/1.1"]  # it did reach new first
    other = await RawClient.open(handle.port)
    posted = await other.request("POST", "/api/slow", {"X-Request-Id": "post-1"}, body=b"{}")
    assert posted.status == 504 and posted.header("X-Strangler-Fallback") is None
    error = posted.json()["error"]
    assert isinstance(error, dict) and error["request_id"] == "post-1"
    assert paths_seen(echo) == [("GET", "/api/slow")]
    assert handle.gateway.counters.fallbacks == {("api", "timeout"): 1}
    client.close()
    other.close()


async def test_5xx_of_an_idempotent_request_falls_back(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """``on_5xx``: new's 503 to a GET or a PUT (its body kept and sent again) is replaced by legacy's
    answer, before any of it reaches the client; a POST's 503 is passed on."""
    new = await EchoUpstream().start()
    try:
        routes = (
            "routes:\n"
            "  - {name: status, match: {path: '/status/{code}'}, target: new, fallback: {on_5xx: true}}\n"
        )
        handle = await make_gateway(routes_yaml(echo.port, new.port, legacy_base="/old", routes=routes))
        client = await RawClient.open(handle.port)
        got = await client.request("GET", "/status/503")
        assert got.status == 200 and got.header("X-Strangler-Fallback") == "5xx"
        put = await client.request("PUT", "/status/500", body=b"x" * 1000)
        assert put.status == 200 and put.header("X-Strangler-Fallback") == "5xx"
        assert echo.seen.requests[-1]["body_len"] == 1000
        posted = await client.request("POST", "/status/503", body=b"{}")
        assert posted.status == 503 and posted.header("X-Strangler-Fallback") is None
        assert paths_seen(echo) == [("GET", "/old/status/503"), ("PUT", "/old/status/500")]
        assert handle.gateway.counters.fallbacks == {("status", "5xx"): 2}
        client.close()
    finally:
        await new.close()


class Switchable:
    """A raw new service answering 503 or 200 as told; counts its connections and requests."""

    def __init__(self) -> None:
        self.failing = True
        self.requests = 0

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            self.requests += 1
            status = b"503 Service Unavailable" if self.failing else b"200 OK"
            writer.write(b"HTTP/1.1 %s\r\nContent-Length: 3\r\n\r\nnew" % status)
            await writer.drain()


async def test_breaker_opens_routes_to_legacy_then_probes_and_closes(
    make_gateway: GatewayFactory,
    echo: EchoUpstream,
    raw_upstream: StartRaw,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three 5xx in a row open the circuit: the next requests go to legacy without reaching new; after
    the cool-down two probes go to new and, succeeding, close it. Each transition is logged once."""
    service = Switchable()
    new = await raw_upstream(service.handler)
    clock = ManualClock()
    extra = "fallback: {on_5xx: true}, circuit_breaker: {consecutive: 3, cool_down_s: 5, half_open: 2}"
    handle = await make_gateway(
        routes_yaml(echo.port, new.port, routes=api_route(extra)), breaker_clock=clock
    )
    counters = handle.gateway.counters
    client = await RawClient.open(handle.port)
    caplog.set_level(logging.INFO, logger="strangler.server")
    for _ in range(3):
        assert (await client.request("GET", "/api/a")).header("X-Strangler-Fallback") == "5xx"
    assert counters.circuit_state["api"] == "open"
    accepted = new.connections  # a 5xx fallback closes new's connection: one each
    for _ in range(4):
        got = await client.request("GET", "/api/b")
        assert got.status == 200 and got.header("X-Strangler-Fallback") == "circuit"
    assert service.requests == 3 and new.connections == accepted  # nothing more reached new
    service.failing = False
    clock.advance(5.0)
    for _ in range(2):
        got = await client.request("GET", "/api/c")
        assert got.status == 200 and got.body == b"new"
    assert counters.circuit_state["api"] == "closed"
    assert service.requests == 5
    assert counters.circuit_transitions == {("api", "open"): 1, ("api", "half_open"): 1, ("api", "closed"): 1}
    assert counters.fallbacks == {("api", "5xx"): 3, ("api", "circuit"): 4}
    opened = [r for r in caplog.records if r.getMessage() == "circuit open for route api"]
    assert len(opened) == 1
    client.close()


async def test_a_failing_probe_opens_the_circuit_again(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """New dead: the breaker opens; after the cool-down a probe fails to connect, is served by legacy,
    and the circuit is open again (no second probe while open)."""
    clock = ManualClock()
    extra = "fallback: true, circuit_breaker: {consecutive: 2, cool_down_s: 5, half_open: 1}"
    handle = await make_gateway(
        routes_yaml(echo.port, free_port(), routes=api_route(extra)), breaker_clock=clock
    )
    counters = handle.gateway.counters
    client = await RawClient.open(handle.port)
    reasons = [(await client.request("GET", "/api/x")).header("X-Strangler-Fallback") for _ in range(3)]
    assert reasons == ["connect", "connect", "circuit"]
    clock.advance(5.0)
    assert (await client.request("GET", "/api/x")).header("X-Strangler-Fallback") == "connect"  # the probe
    assert counters.circuit_state["api"] == "open"
    assert (await client.request("GET", "/api/x")).header("X-Strangler-Fallback") == "circuit"
    assert counters.circuit_transitions == {("api", "open"): 2, ("api", "half_open"): 1}
    client.close()


async def test_new_dead_burst_has_no_failed_idempotent_request(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """``target: new`` with new dead and fallback on: 200 GETs over 10 connections all succeed."""
    routes = "fallback: true\ncircuit_breaker: true\n" + api_route("")
    handle = await make_gateway(routes_yaml(echo.port, free_port(), routes=routes))

    async def burst(n: int) -> list[int]:
        client = await RawClient.open(handle.port)
        statuses = [(await client.request("GET", f"/api/item/{i}")).status for i in range(n)]
        client.close()
        return statuses

    results = await asyncio.gather(*(burst(20) for _ in range(10)))
    statuses = [s for r in results for s in r]
    assert len(statuses) == 200 and set(statuses) == {200}
    fallbacks = handle.gateway.counters.fallbacks
    assert sum(fallbacks.values()) == 200 and set(fallbacks) <= {("api", "connect"), ("api", "circuit")}
    assert handle.gateway.counters.circuit_state["api"] == "open"


async def test_a_reload_keeps_an_unchanged_breaker(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A reload with the same breaker spec keeps its state (an open circuit stays open)."""
    text = routes_yaml(echo.port, free_port(), routes=api_route("circuit_breaker: {consecutive: 1}"))
    handle = await make_gateway(text)
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/api/x")).status == 502  # no fallback: the breaker only counts
    breaker = handle.gateway.guards["api"].breaker
    assert breaker is not None and breaker.state == 1
    handle.gateway.set_table(parse_routes(text + "# touched\n", "test.yaml"))
    assert handle.gateway.guards["api"].breaker is breaker
    got = await client.request("GET", "/api/x")  # open: legacy serves it even without fallback
    assert got.status == 200 and got.header("X-Strangler-Fallback") == "circuit"
    client.close()


class Shadow(ShadowSink):
    """A ShadowSink that samples every request of a shadowed route and records what it is given."""

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.exchanges: list[Exchange] = []
        self.reasons: list[str] = []
        self.fallbacks: list[tuple[str, str]] = []

    def wants(self, route: Route, method: str, primary: str = "") -> bool:
        return route.shadow is not None

    def not_comparable(self, route: Route, reason: str) -> None:
        self.reasons.append(reason)

    def fallback(self, route: Route, reason: str) -> None:
        self.fallbacks.append((route.name, reason))

    def prewrite(self, *args: object) -> None:
        return None

    def submit(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


async def test_a_fallback_is_not_shadowed_but_counted_as_not_compared(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A shadowed request served by legacy in new's place submits no exchange: it is not comparable
    (``fallback``), as legacy compared with itself proves nothing; the fallback is counted for the report."""
    shadow = Shadow()
    handle = await make_gateway(
        routes_yaml(echo.port, free_port(), routes=api_route("fallback: true, shadow: {sample: 1.0}")),
        shadow=shadow,
    )
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/api/x")).header("X-Strangler-Fallback") == "connect"
    await eventually(lambda: shadow.reasons == ["fallback"], what="the not-comparable count")
    assert shadow.exchanges == []
    assert shadow.fallbacks == [("api", "connect")]
    client.close()


async def test_a_body_arriving_after_the_connect_failure_goes_to_legacy(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """New refuses while a chunked POST's body is still arriving: the body, buffered since the head was
    never sent, follows the request to legacy whole."""
    handle = await make_gateway(routes_yaml(echo.port, free_port(), routes=api_route("fallback: true")))
    client = await RawClient.open(handle.port)
    await client.send(b"POST /api/up HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n")
    await eventually(lambda: handle.gateway.counters.fallbacks == {("api", "connect"): 1}, what="a fallback")
    await client.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    got = await client.response()
    assert got.status == 200 and got.header("X-Strangler-Fallback") == "connect"
    assert echo.seen.requests[-1]["body_len"] == len(b"hello world")
    client.close()


async def test_a_body_too_large_to_keep_is_not_sent_again(
    make_gateway: GatewayFactory, echo: EchoUpstream, raw_upstream: StartRaw
) -> None:
    """A PUT whose body passed the pending-body limit was streamed to new and not kept: new's silence
    does not send it to legacy (new's own 504 answers), while a small PUT does fall back."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)

    new = await raw_upstream(stall)
    yaml_text = routes_yaml(
        echo.port, new.port, new_opts=", timeout: 0.6", routes=api_route("fallback: {timeout: 0.1}")
    )
    handle = await make_gateway(yaml_text, GatewaySettings(pending_body_limit=1024))
    client = await RawClient.open(handle.port)
    small = await client.request("PUT", "/api/doc", body=b"s" * 100)
    assert small.status == 200 and small.header("X-Strangler-Fallback") == "timeout"
    other = await RawClient.open(handle.port)
    large = await other.request("PUT", "/api/doc", body=b"L" * 5000)
    assert large.status == 504 and large.header("X-Strangler-Fallback") is None
    assert [r["body_len"] for r in echo.seen.requests] == [100]
    client.close()
    other.close()
