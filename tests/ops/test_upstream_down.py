"""New is down: the gateway answers 502 at once, counts it per upstream, and /readyz and /metrics say which
upstream is down. Also the data-path limit settings (flags and env), the request counts the gateway is built
with, and the counters' worker merge."""

from __future__ import annotations

import argparse
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.opshelp import routes_text, upstream
from support.upstreams import RawClient

from proxy.ops.admin import AdminState, create_admin_app
from proxy.ops.metrics import RequestStats, local_registry, merge_data_path, render
from proxy.ops.settings import Settings, SettingsError, add_proxy_arguments, settings_from
from proxy.routing.table import parse_routes
from proxy.server.gateway import Gateway
from proxy.server.listener import start_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_new_down_502_counted_and_named_by_readyz_and_metrics() -> None:
    """Connect refused by new: 502 without waiting (a 30 s connect timeout is never reached), counted
    by upstream and kind; /readyz is 503 naming new, with what the data path saw; the gauge says 0."""
    async with upstream("legacy") as leg:
        dead = f"http://127.0.0.1:{closed_port()}"
        text = routes_text(leg.url, dead, "new").replace("connect_timeout: 1.0", "connect_timeout: 30.0")
        table = parse_routes(text, "routes.yaml")
        stats = RequestStats()
        gateway = Gateway(table, observer=stats, counters=stats.data_path)
        server = await start_server(gateway)
        client = await RawClient.open(server.port)
        state = AdminState(
            table, "routes.yaml", local_registry(stats), health_timeout=0.5, data_path=lambda: stats.data_path
        )
        admin: TestClient = TestClient(TestServer(create_admin_app(state)))  # type: ignore[type-arg]
        await admin.start_server()
        try:
            assert (await client.request("GET", "/other")).status == 200  # legacy: connected, up
            for _ in range(3):
                response = await client.request("GET", "/items/1")  # new: refused
                assert response.status == 502
            assert stats.data_path.upstream_errors == {("new", "connect"): 3}
            metrics = render(state.registry).decode()
            assert 'strangler_upstream_errors_total{kind="connect",upstream="new"} 3.0' in metrics
            assert 'strangler_upstream_up{upstream="new"} 0.0' in metrics
            assert 'strangler_upstream_up{upstream="legacy"} 1.0' in metrics
            resp = await admin.get("/readyz")
            body = await resp.json()
            assert resp.status == 503
            assert body["upstreams"] == {"legacy": "ok", "new": "failing"}
            assert body["checks"]["new"]["gateway"]["last_connect"] == "failed"
            assert body["checks"]["new"]["gateway"]["errors"] == {"connect": 3}
            assert body["checks"]["legacy"]["gateway"] == {
                "last_connect": "ok",
                "since": body["checks"]["legacy"]["gateway"]["since"],
                "errors": {},
            }
        finally:
            client.close()
            await admin.close()
            await server.close()
            gateway.close()


def test_data_path_counters_merge_across_workers() -> None:
    """Worker snapshots add up: errors and refusals summed, the latest up/down state per upstream kept."""
    one, two = RequestStats(), RequestStats()
    one.data_path.upstream_failed("new", "connect", True)
    one.data_path.refused_connections = 2
    two.data_path.upstream_failed("new", "connect", True)
    two.data_path.upstream_failed("new", "timeout", False)
    two.data_path.refused_connections = 1
    one.data_path.upstream_up["new"] = (False, 100.0)
    two.data_path.upstream_up["new"] = (True, 200.0)
    merged = merge_data_path([one.snapshot(), two.snapshot(), {"counts": [], "cells": []}])
    assert merged.upstream_errors == {("new", "connect"): 2, ("new", "timeout"): 1}
    assert merged.refused_connections == 3
    assert merged.upstream_up == {"new": (True, 200.0)}


def parse(argv: list[str], env: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser)
    return settings_from(parser.parse_args(argv), env)


def test_limit_flags_and_env() -> None:
    """Idle/header/body timeouts, max body and max connections come from flags or STRANGLER_* env."""
    defaults = parse([], {})
    assert (defaults.idle_timeout, defaults.header_timeout, defaults.body_timeout) == (75.0, 30.0, 60.0)
    assert defaults.max_body == 64 << 20 and defaults.max_connections == 10000
    env = {"STRANGLER_IDLE_TIMEOUT": "5", "STRANGLER_MAX_BODY": "10k", "STRANGLER_MAX_CONNECTIONS": "0"}
    settings = parse(["--header-timeout", "2.5", "--body-timeout", "7", "--max-body", "1m"], env)
    assert settings.idle_timeout == 5.0 and settings.header_timeout == 2.5 and settings.body_timeout == 7.0
    assert settings.max_body == 1 << 20 and settings.max_connections == 0
    assert parse([], env).max_body == 10240
    assert parse(["--max-body", "12345"], {}).max_body == 12345
    assert Settings.from_json(settings.to_json()) == settings


@pytest.mark.parametrize(
    ("argv", "env", "pattern"),
    [
        (["--body-timeout", "0"], {}, r"--body-timeout='0'.*greater than 0"),
        ([], {"STRANGLER_IDLE_TIMEOUT": "soon"}, r"env STRANGLER_IDLE_TIMEOUT='soon'"),
        (["--max-body", "lots"], {}, r"--max-body='lots'.*bytes.*STRANGLER_MAX_BODY"),
        (["--max-connections", "-1"], {}, r"--max-connections='-1'.*0 or more"),
    ],
)
def test_bad_limit_values_name_the_flag(argv: list[str], env: dict[str, str], pattern: str) -> None:
    """A bad limit is refused naming its flag or env key and the expected shape."""
    with pytest.raises(SettingsError, match=pattern):
        parse(argv, env)


def test_build_gateway_applies_the_limits() -> None:
    """`strangler proxy` hands the limits to the data path, and the counters to the metrics."""
    from proxy.ops.serve import build_gateway

    table = parse_routes(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"), "routes.yaml")
    argv = ["--idle-timeout", "9", "--max-body", "2k", "--max-connections", "3", "--no-access-log"]
    settings = parse(argv, {})
    stats = RequestStats()
    gateway = build_gateway(settings, table, stats, None)
    try:
        data = gateway.settings
        assert (data.client_idle_timeout, data.max_body_bytes, data.max_connections) == (9.0, 2048, 3)
        assert (data.header_timeout, data.body_timeout) == (30.0, 60.0)
        assert gateway.counters is stats.data_path
    finally:
        gateway.close()


async def test_build_gateway_counts_requests_into_the_stats() -> None:
    """The data path's observer is the stats' request counts (compiled with it, no wrapper): the requests
    it serves show in strangler_requests_total and the duration histogram."""
    from proxy.ops.serve import build_gateway

    async with upstream("legacy") as leg:
        table = parse_routes(routes_text(leg.url, leg.url), "routes.yaml")
        stats = RequestStats()
        gateway = build_gateway(parse(["--no-access-log"], {}), table, stats, None)
        server = await start_server(gateway)
        client = await RawClient.open(server.port)
        try:
            assert gateway.observer is stats.requests
            for _ in range(3):
                assert (await client.request("GET", "/items/1")).status == 200
            assert stats.counts() == {("items", "legacy", 200): 3}
            metrics = render(local_registry(stats)).decode()
            assert 'strangler_requests_total{route="items",status="200",target="legacy"} 3.0' in metrics
            assert 'strangler_request_duration_seconds_count{route="items",target="legacy"} 3.0' in metrics
        finally:
            client.close()
            await server.close()
            gateway.close()
