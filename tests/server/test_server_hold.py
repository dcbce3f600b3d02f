"""The data path's hold of a sampled write (proxy/server/holding.py), with a sink whose dry runs the test
ends by hand: nothing reaches the upstream before ``done()``, the wait is not the primary's latency, a
client gone meanwhile is not forwarded, and a failing sink never blocks the write."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from support.clock import ManualClock
from support.gwkit import GatewayFactory, routes_yaml
from support.upstreams import EchoUpstream, RawClient
from support.waiting import eventually

import proxy.server.connection
import proxy.server.holding
import proxy.server.responder
from proxy.routing.table import Route
from proxy.server.exchange import Exchange
from proxy.server.gateway import GatewaySettings, ShadowSink

SHADOWED = (
    'routes:\n  - name: users\n    match: {path: "/users/{id}"}\n'
    "    target: legacy\n    shadow: {sample: 1.0}\n"
)
HOLD_HEAD = b"POST /users/1?q=a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n"


class HoldingShadow(ShadowSink):
    """A ShadowSink whose dry runs stay out until the test calls their ``done``."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(1 << 20)
        self.fail = fail
        self.asked: list[tuple[str, str, bytes, Callable[[], None]]] = []
        self.exchanges: list[Exchange] = []
        self.reasons: list[str] = []

    def wants(self, route: Route, method: str, primary: str = "") -> bool:
        return True

    def prewrite(
        self, route: Route, method: str, path_qs: str, lines: list[bytes], body: bytes,
        host: bytes | None, done: Callable[[], None],
    ) -> object | None:  # fmt: skip
        if self.fail:
            raise RuntimeError("prewrite failed")
        self.asked.append((method, path_qs, body, done))
        return ("handle", len(self.asked))

    def submit(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def not_comparable(self, route: Route, reason: str) -> None:
        self.reasons.append(reason)


class Observed:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        self.seconds.append(seconds)


async def test_write_reaches_the_upstream_only_after_done_and_the_wait_is_not_its_latency(
    make_gateway: GatewayFactory, echo: EchoUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held until ``done()``: the echo upstream sees nothing before; the exchange carries the handle and
    the primary's own latency (the 7 s held on the test's clock are the client's, not legacy's)."""
    clock = ManualClock()
    for module in (proxy.server.connection, proxy.server.holding, proxy.server.responder):
        monkeypatch.setattr(module, "perf_counter", clock)
    shadow, observed = HoldingShadow(), Observed()
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow,
                                observer=observed)  # fmt: skip
    client = await RawClient.open(handle.port)
    try:
        await client.send(HOLD_HEAD + b"{}")
        await eventually(lambda: len(shadow.asked) == 1, what="the dry run asked for")
        method, path_qs, body, done = shadow.asked[0]
        assert (method, path_qs, body) == ("POST", "/users/1?q=a", b"{}")
        (conn,) = handle.server.connections
        assert conn.cur.conn is None and echo.seen.requests == []  # held: no upstream call
        clock.advance(7.0)
        done()
        response = await client.response()
        assert response.status == 200 and response.json()["method"] == "POST"
        await eventually(lambda: len(shadow.exchanges) == 1, what="the exchange submitted")
    finally:
        client.close()
    exchange = shadow.exchanges[0]
    assert exchange.prewrite == ("handle", 1) and exchange.request_body == b"{}"
    assert exchange.latency_s == 0.0 and observed.seconds == [7.0]


async def test_client_gone_while_held_is_never_forwarded(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """The client's connection is reset while its write waits for the dry run: ``done()`` later forwards
    nothing. (A client that only half-closes is still answered, as any pipelined request.)"""
    shadow = HoldingShadow()
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    await client.send(HOLD_HEAD + b"{}")
    await eventually(lambda: len(shadow.asked) == 1, what="the dry run asked for")
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    client.close()
    await eventually(lambda: handle.server.active_requests == 0, what="the held request ended")
    shadow.asked[0][3]()
    probe = await RawClient.open(handle.port)  # the gateway still serves; the write never went out
    try:
        assert (await probe.request("GET", "/users/2")).status == 200
    finally:
        probe.close()
    assert [r["method"] for r in echo.seen.requests] == ["GET"] and shadow.exchanges[-1].method == "GET"


async def test_failing_sink_never_blocks_the_write(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A sink whose prewrite raises: the write is forwarded at once and its exchange submitted as before."""
    shadow = HoldingShadow(fail=True)
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    try:
        assert (await client.request("POST", "/users/1", body=b"{}")).status == 200
        await eventually(lambda: len(shadow.exchanges) == 1, what="the exchange submitted")
    finally:
        client.close()
    assert shadow.exchanges[0].prewrite is None and shadow.exchanges[0].method == "POST"


async def test_write_over_the_pending_limit_is_forwarded_not_held(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A write body the gateway would pause reading for (over its pending-body limit, under the shadow's
    cap) is not held: it streams to the upstream whole, without a dry run, counted as ``write_body``."""
    shadow = HoldingShadow()
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow,
                                settings=GatewaySettings(pending_body_limit=1024))  # fmt: skip
    client = await RawClient.open(handle.port)
    body = bytes(range(256)) * 64  # 16 KiB
    try:
        response = await client.request("POST", "/users/1", body=body)
    finally:
        client.close()
    assert response.status == 200 and response.json()["body_len"] == len(body)
    assert shadow.asked == [] and shadow.reasons == ["write_body"] and shadow.exchanges == []
