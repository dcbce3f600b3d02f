"""Gateway lifecycle: table swaps, pool reconciliation, draining, idle timeouts, and the request hooks."""

from __future__ import annotations

import asyncio
import json
from typing import cast

from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient, RawUpstream, read_request
from support.waiting import eventually

from proxy.http1.reader import READ_PLAIN
from proxy.routing.table import Route, parse_routes
from proxy.server.connection import ClientProtocol
from proxy.server.exchange import Exchange
from proxy.server.gateway import AccessRecord, GatewaySettings, ShadowSink
from proxy.server.states import NAMES

SHADOWED = (
    'routes:\n  - name: users\n    match: {path: "/users/{id}"}\n    target: new\n    shadow: {sample: 1.0}\n'
)


class Observed:
    """A RequestObserver that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, float]] = []

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        self.calls.append((route, target, status, seconds))


class Shadow(ShadowSink):
    """A ShadowSink that records exchanges (and can be told to fail)."""

    def __init__(self, body_cap: int = 1 << 20, fail: bool = False) -> None:
        super().__init__(body_cap)
        self.fail = fail
        self.exchanges: list[Exchange] = []
        self.reasons: list[str] = []

    def wants(self, route: Route, method: str, primary: str = "") -> bool:
        if self.fail:
            raise RuntimeError("shadow wants failed")
        return route.shadow is not None

    def not_comparable(self, route: Route, reason: str) -> None:
        self.reasons.append(reason)

    def prewrite(self, *args: object) -> None:
        return None  # no dry run: the write is forwarded at once, its exchange submitted as before

    def submit(self, exchange: Exchange) -> None:
        if self.fail:
            raise RuntimeError("shadow submit failed")
        self.exchanges.append(exchange)


async def test_observer_and_access_log_called_per_request(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """Each finished request reaches the observer and the access log, errors included."""
    observed = Observed()
    records: list[AccessRecord] = []
    handle = await make_gateway(
        routes_yaml(echo.port, echo.port, routes=SHADOWED), observer=observed, access_log=records.append
    )
    client = await RawClient.open(handle.port)
    await client.request("POST", "/users/3?x=1", {"X-Request-Id": "req-1"}, body=b"12345")
    await client.request("GET", "/other", {"Via": "1.1 strangler"})
    assert [(r, t, s) for r, t, s, _ in observed.calls] == [("users", "new", 200)]
    assert observed.calls[0][3] > 0
    record = records[0]
    assert (record.request_id, record.method, record.path, record.route, record.target, record.status) == (
        "req-1", "POST", "/users/3", "users", "new", 200,
    )  # fmt: skip
    assert record.bytes_in == 5 and record.bytes_out > 0 and record.peer == "127.0.0.1"
    client.close()


async def test_shadow_receives_exchange_with_teed_bodies(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A wanted request is handed to shadowing after the response, with both bodies and headers."""
    shadow = Shadow()
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    response = await client.request("POST", "/Users/9?q=a", {"X-Request-Id": "sh-1"}, body=b"payload")
    await client.request("GET", "/not-shadowed")
    assert len(shadow.exchanges) == 1
    exchange = shadow.exchanges[0]
    assert (exchange.method, exchange.path, exchange.query, exchange.primary, exchange.status) == (
        "POST", "/users/9", "q=a", "new", 200,
    )  # fmt: skip
    assert exchange.route.name == "users" and exchange.request_id == b"sh-1"
    assert exchange.request_body == b"payload"
    assert exchange.response_body == response.body
    assert (b"X-Request-Id", b"sh-1") in exchange.request_headers
    assert not any(k.lower() in (b"host", b"content-length") for k, _ in exchange.request_headers)
    assert any(k.lower() == b"content-type" for k, _ in exchange.response_headers)
    assert exchange.latency_s > 0
    # The responder hands over the lines and target as it joined and encoded them for the primary.
    assert type(exchange) is Exchange and exchange.prewrite is None
    assert exchange.request_block == b"\r\n".join(exchange.request_lines) and exchange.request_block
    assert exchange.target == b"/users/9?q=a" == exchange.path_qs.encode()
    assert exchange.client_host is not None and exchange.key == ""  # the key is the shadow's to make
    client.close()


async def test_exchange_carries_the_response_bytes_of_one_plain_read(make_gateway: GatewayFactory) -> None:
    """A GET's response that came whole in one read, in the plain shape and keep-alive, reaches shadowing as
    the upstream's bytes too (`Exchange.response_raw`: a copy's answer is compared with them in place,
    compiled build); a write's, a HEAD's, one ending its connection, or a body over the cap: never. Each
    answer is one small write on loopback, which arrives as one read: a split one carries b"" (allowed)."""
    plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    closing = plain.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if line.startswith(b"HEAD "):
                writer.write(plain[:-5])  # the head alone
            else:
                writer.write(closing if b"/close" in line else plain)
            await writer.drain()
            if b"/close" in line:
                return

    upstream = await RawUpstream(answer).start()
    shadow = Shadow(body_cap=1 << 20)
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    for _ in range(5):
        assert (await client.request("GET", "/users/1")).body == b"hello"
    assert all(ex.response_raw in (b"", plain) for ex in shadow.exchanges)
    if READ_PLAIN is None:  # the pure-Python build reads every response with llhttp
        assert [ex.response_raw for ex in shadow.exchanges] == [b""] * 5
    else:
        assert plain in [ex.response_raw for ex in shadow.exchanges]
    await client.request("POST", "/users/1", body=b"x")  # a write's copy is never compared in place
    await client.request("HEAD", "/users/1")
    await client.request("GET", "/users/close")
    assert [ex.method for ex in shadow.exchanges[5:]] == ["POST", "HEAD", "GET"]
    assert [ex.response_raw for ex in shadow.exchanges[5:]] == [b"", b"", b""]
    client.close()

    small = Shadow(body_cap=4)  # the body is not teed: no bytes either
    handle = await make_gateway(routes_yaml(upstream.port, upstream.port, routes=SHADOWED), shadow=small)
    client = await RawClient.open(handle.port)
    await client.request("GET", "/users/1")
    assert [(ex.response_body, ex.response_raw) for ex in small.exchanges] == [(None, b"")]
    client.close()
    await upstream.close()


async def test_shadow_bodies_over_cap_are_none(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """Bodies larger than the shadow's body_cap are not teed: None in the exchange. A write that large is
    forwarded without its dry run: no exchange, counted as not comparable (``write_body``)."""
    shadow = Shadow(body_cap=100)
    handle = await make_gateway(routes_yaml(echo.port, echo.port, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    await client.request("GET", "/users/1", body=b"x" * 500)
    assert shadow.exchanges[0].request_body is None
    assert shadow.exchanges[0].response_body is None  # the echo JSON is over 100 bytes
    response = await client.request("POST", "/users/1", body=b"x" * 500)
    assert response.status == 200 and json.loads(response.body)["body_len"] == 500
    assert len(shadow.exchanges) == 1 and shadow.reasons == ["write_body"]
    client.close()


async def test_hook_failures_never_reach_the_client(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """Exceptions in the observer, access log or shadow are swallowed; the client gets its answer."""

    class Broken:
        def observe(self, route: str, target: str, status: int, seconds: float) -> None:
            raise RuntimeError("observer failed")

    def broken_log(record: AccessRecord) -> None:
        raise RuntimeError("access log failed")

    handle = await make_gateway(
        routes_yaml(echo.port, echo.port, routes=SHADOWED),
        observer=Broken(),
        shadow=Shadow(fail=True),
        access_log=broken_log,
    )
    client = await RawClient.open(handle.port)
    for _ in range(2):
        assert (await client.request("GET", "/users/1")).status == 200
    client.close()


async def test_set_table_swaps_routes_and_reconciles_pools(
    make_gateway: GatewayFactory, echo: EchoUpstream
) -> None:
    """A new table applies to the next request; unchanged upstreams keep their pool, changed ones don't."""
    other = await EchoUpstream().start()
    try:
        handle = await make_gateway(routes_yaml(echo.port, other.port))
        gateway = handle.gateway
        legacy_pool, new_pool = gateway.pools["legacy"], gateway.pools["new"]
        client = await RawClient.open(handle.port)
        await client.request("GET", "/users/1")
        assert len(echo.seen.requests) == 1
        flipped = routes_yaml(echo.port, other.port + 0, routes=SHADOWED, new_opts=", pool_size: 8")
        gateway.set_table(parse_routes(flipped, "test.yaml"))
        assert gateway.pools["legacy"] is legacy_pool
        assert gateway.pools["new"] is not new_pool and new_pool.closed
        await client.request("GET", "/users/1")
        assert len(other.seen.requests) == 1
        client.close()
    finally:
        await other.close()


async def test_in_flight_request_keeps_its_table(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A request started before a swap finishes on the table (and pool) it started with."""
    other = await EchoUpstream().start()
    try:
        handle = await make_gateway(routes_yaml(echo.port, echo.port))
        client = await RawClient.open(handle.port)
        await client.send(b"GET /sse?gap=0.3 HTTP/1.1\r\nHost: g\r\n\r\n")
        await client.reader.readuntil(b"\r\n\r\n")
        handle.gateway.set_table(parse_routes(routes_yaml(other.port, other.port), "test.yaml"))
        while (size := int(await client.reader.readuntil(b"\r\n"), 16)) != 0:
            await client.reader.readexactly(size + 2)
        await client.reader.readexactly(2)
        response = await client.request("GET", "/after")
        assert response.status == 200 and len(other.seen.requests) == 1
        client.close()
    finally:
        await other.close()


async def test_drain_finishes_in_flight_then_closes(gw: RunningGateway) -> None:
    """Draining refuses new connections, lets the in-flight response finish with Connection: close."""
    busy = await RawClient.open(gw.port)
    idle = await RawClient.open(gw.port)
    assert (await idle.request("GET", "/x")).status == 200
    await busy.send(b"GET /sse?gap=0.2 HTTP/1.1\r\nHost: g\r\n\r\n")
    await busy.reader.readuntil(b"\r\n\r\n")
    assert gw.server.active_requests == 1
    drain = asyncio.create_task(gw.server.drain(5.0))
    assert await idle.at_eof(1.0)
    assert not drain.done()
    body = await busy.reader.read()  # the rest of the stream, then the close
    assert body.endswith(b"0\r\n\r\n")
    assert await drain is True
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.close()
        refused = False
    except ConnectionError:
        refused = True
    assert refused
    busy.close()
    idle.close()


async def test_drain_closes_keep_alive_after_response(gw: RunningGateway) -> None:
    """A keep-alive connection whose response is in flight at drain time gets Connection: close."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /sse?gap=0.2 HTTP/1.1\r\nHost: g\r\n\r\n")
    await eventually(lambda: gw.server.active_requests == 1, what="the request in flight")
    gw.server.start_draining()
    assert (await client.response()).status == 200
    assert await client.at_eof()
    await gw.server.drained()
    client.close()


class FakeClock:
    """An injected clock: the gateway's timeouts see only the time a test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _states(handle: RunningGateway) -> list[str]:
    return [NAMES[cast(ClientProtocol, conn).state] for conn in handle.server.connections]


async def test_idle_client_connection_closed(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A keep-alive client idle longer than client_idle_timeout is disconnected, and not before."""
    clock = FakeClock()
    settings = GatewaySettings(client_idle_timeout=1.0)
    handle = await make_gateway(routes_yaml(echo.port, echo.port), settings, clock=clock)
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/x")).status == 200
    clock.now += 0.9
    handle.server.sweep()  # idle 0.9 s of 1.0: kept
    assert (await client.request("GET", "/y")).status == 200
    clock.now += 1.1
    handle.server.sweep()  # idle 1.1 s since the last request
    assert await client.at_eof(4.0)
    client.close()


async def test_slow_header_gets_408(make_gateway: GatewayFactory, echo: EchoUpstream) -> None:
    """A request head that does not complete within header_timeout is answered 408 and closed."""
    clock = FakeClock()
    settings = GatewaySettings(header_timeout=1.0)
    handle = await make_gateway(routes_yaml(echo.port, echo.port), settings, clock=clock)
    client = await RawClient.open(handle.port)
    await client.send(b"GET /x HTTP/1.1\r\nHost: g\r\n")
    await eventually(lambda: _states(handle) == ["head"], what="the connection reading a head",
                     last=lambda: _states(handle))  # fmt: skip
    clock.now += 0.9
    handle.server.sweep()  # 0.9 s of 1.0: still reading the head
    assert _states(handle) == ["head"]
    clock.now += 0.2
    handle.server.sweep()
    response = await asyncio.wait_for(client.response(), 4.0)
    assert response.status == 408
    assert await client.at_eof()
    client.close()


async def test_shadow_not_given_gateway_errors(make_gateway: GatewayFactory) -> None:
    """A request the primary never answered (502) is not handed to shadowing."""
    shadow = Shadow()
    handle = await make_gateway(routes_yaml(1, 1, routes=SHADOWED), shadow=shadow)
    client = await RawClient.open(handle.port)
    assert (await client.request("GET", "/users/1")).status == 502
    assert shadow.exchanges == []
    client.close()


async def test_client_gone_mid_response_does_not_poison_pool(gw: RunningGateway, echo: EchoUpstream) -> None:
    """A client that disconnects mid-download drops that upstream connection; later requests work."""
    client = await RawClient.open(gw.port)
    await client.send(b"GET /download?n=%d HTTP/1.1\r\nHost: g\r\n\r\n" % (64 << 20))
    await client.reader.readuntil(b"\r\n\r\n")
    await client.reader.readexactly(100_000)
    client.close()
    await eventually(lambda: gw.server.active_requests == 0, what="the cut request to end")
    second = await RawClient.open(gw.port)
    for _ in range(3):
        response = await second.request("GET", "/after")
        assert response.status == 200 and response.json()["path"] == "/after"
    second.close()
