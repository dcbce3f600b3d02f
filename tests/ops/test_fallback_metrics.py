"""Fallbacks and circuit breakers in /metrics: counted per route and reason, the state gauge, transitions,
and the worker merge of their counters."""

from __future__ import annotations

import socket

from support.opshelp import routes_text, upstream
from support.upstreams import RawClient

from proxy.ops.metrics import RequestStats, local_registry, merge_data_path, render
from proxy.routing.table import parse_routes
from proxy.server.gateway import Gateway
from proxy.server.listener import start_server


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_fallbacks_and_the_circuit_in_metrics() -> None:
    """New dead, fallback and breaker on /items: two connect fallbacks open the circuit, the third request
    is a circuit fallback; /metrics shows the counts by reason, the open state and one transition."""
    async with upstream("legacy") as leg:
        guarded = "    target: new\n    fallback: true\n    circuit_breaker: {consecutive: 2}\n"
        text = routes_text(leg.url, f"http://127.0.0.1:{closed_port()}", "new")
        text = text.replace("    target: new\n", guarded)
        stats = RequestStats()
        gateway = Gateway(parse_routes(text, "routes.yaml"), observer=stats, counters=stats.data_path)
        server = await start_server(gateway)
        client = await RawClient.open(server.port)
        try:
            for _ in range(3):
                assert (await client.request("GET", "/items/1")).status == 200
            metrics = render(local_registry(stats)).decode()
            assert 'strangler_fallbacks_total{reason="connect",route="items"} 2.0' in metrics
            assert 'strangler_fallbacks_total{reason="circuit",route="items"} 1.0' in metrics
            assert 'strangler_circuit_state{route="items"} 1.0' in metrics
            assert 'strangler_circuit_transitions_total{route="items",to="open"} 1.0' in metrics
            # served by legacy: the request metrics say so
            assert 'strangler_requests_total{route="items",status="200",target="legacy"} 3.0' in metrics
        finally:
            client.close()
            await server.close()
            gateway.close()


def test_fallback_counters_merge_across_workers() -> None:
    """Worker snapshots add up: fallbacks and transitions summed, the worst circuit state kept."""
    one, two = RequestStats(), RequestStats()
    one.data_path.fallback("items", "connect")
    two.data_path.fallback("items", "connect")
    two.data_path.fallback("items", "circuit")
    one.data_path.circuit_changed("items", "closed", None)
    two.data_path.circuit_changed("items", "open", "open")
    merged = merge_data_path([one.snapshot(), two.snapshot()])
    assert merged.fallbacks == {("items", "connect"): 2, ("items", "circuit"): 1}
    assert merged.circuit_transitions == {("items", "open"): 1}
    assert merged.circuit_state == {"items": "open"}
