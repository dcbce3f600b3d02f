"""Admin endpoints over real loopback sockets: /healthz, /readyz, /routes, /metrics, extensions."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.opshelp import routes_text, upstream

from proxy.ops.admin import AdminState, ReloadStatus, create_admin_app
from proxy.ops.metrics import RequestStats, local_registry
from proxy.routing.table import parse_routes


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def admin_client(state: AdminState, extensions: tuple = ()) -> TestClient:  # type: ignore[type-arg]
    client: TestClient = TestClient(TestServer(create_admin_app(state, extensions)))  # type: ignore[type-arg]
    await client.start_server()
    return client


@pytest.fixture
async def live_state() -> AsyncIterator[AdminState]:
    """An admin state whose two upstreams are real loopback servers."""
    async with upstream("legacy") as leg, upstream("new") as new:
        table = parse_routes(routes_text(leg.url, new.url, "new"), "routes.yaml")
        yield AdminState(table, "routes.yaml", local_registry(RequestStats()), health_timeout=0.5)


async def test_healthz_answers_while_alive(live_state: AdminState) -> None:
    """/healthz is 200 with a JSON status."""
    client = await admin_client(live_state)
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    finally:
        await client.close()


async def test_readyz_is_200_when_every_upstream_answers(live_state: AdminState) -> None:
    """/readyz is 200 and lists each upstream as ok when all accept a TCP connection."""
    client = await admin_client(live_state)
    try:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 200, body
        assert body["upstreams"] == {"legacy": "ok", "new": "ok"}
    finally:
        await client.close()


async def test_readyz_is_503_and_names_the_failing_upstream() -> None:
    """/readyz is 503 when one upstream refuses connections, and says which one."""
    async with upstream("legacy") as leg:
        table = parse_routes(routes_text(leg.url, f"http://127.0.0.1:{closed_port()}"), "routes.yaml")
        state = AdminState(table, "routes.yaml", local_registry(RequestStats()), health_timeout=0.5)
        client = await admin_client(state)
        try:
            resp = await client.get("/readyz")
            body = await resp.json()
            assert resp.status == 503
            assert body["upstreams"] == {"legacy": "ok", "new": "failing"}
            assert body["checks"]["new"]["error"]
        finally:
            await client.close()


async def test_readyz_is_503_while_draining(live_state: AdminState) -> None:
    """/readyz turns 503 once the process is draining, even with healthy upstreams."""
    client = await admin_client(live_state)
    try:
        live_state.draining = True
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["draining"] is True
    finally:
        await client.close()


async def test_routes_shows_the_live_table_and_reload_result(live_state: AdminState) -> None:
    """/routes lists each route (name, methods, path, target, shadow) with file, sha256 and last reload."""
    live_state.last_reload = ReloadStatus("failure", 123.0, ["routes.yaml:7: target: unknown upstream"])
    client = await admin_client(live_state)
    try:
        body = await (await client.get("/routes")).json()
        assert body["file"] == "routes.yaml"
        assert body["sha256"] == live_state.table.sha256
        assert body["loaded_at"] == live_state.table.loaded_at
        assert body["last_reload"] == {
            "result": "failure",
            "at": 123.0,
            "errors": ["routes.yaml:7: target: unknown upstream"],
        }
        items = body["routes"][0]
        assert items == {
            "name": "items",
            "methods": ["GET", "HEAD"],
            "path": "/items/{id}",
            "target": "new",
            "shadow": None,
            "line": 6,
        }
        assert body["default"]["target"] == "legacy"
    finally:
        await client.close()


async def test_metrics_expose_requests_and_latency_by_route_and_target() -> None:
    """/metrics renders observed requests as Prometheus counters and histograms."""
    stats = RequestStats()
    table = parse_routes(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"), "routes.yaml")
    state = AdminState(table, "routes.yaml", local_registry(stats))
    for _ in range(3):
        stats.observe("items", "new", 200, 0.004)
    stats.observe("items", "new", 502, 0.2)
    client = await admin_client(state)
    try:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert 'strangler_requests_total{route="items",status="200",target="new"} 3.0' in text
        assert 'strangler_requests_total{route="items",status="502",target="new"} 1.0' in text
        assert 'strangler_request_duration_seconds_bucket{le="0.005",route="items",target="new"} 3.0' in text
        assert 'strangler_request_duration_seconds_count{route="items",target="new"} 4.0' in text
        assert "# TYPE strangler_reload_total counter" in text
    finally:
        await client.close()


async def test_extensions_mount_more_pages(live_state: AdminState) -> None:
    """An extension passed to create_admin_app can add routes that read the state."""

    async def report(request: web.Request) -> web.Response:
        return web.Response(text=f"report for {len(live_state.table.routes)} routes")

    def mount(app: web.Application, state: AdminState) -> None:
        app.router.add_get("/extra", report)

    client = await admin_client(live_state, (mount,))
    try:
        resp = await client.get("/extra")
        assert resp.status == 200
        assert await resp.text() == "report for 2 routes"
    finally:
        await client.close()


async def test_readyz_checks_an_upstream_by_connecting_only() -> None:
    """An upstream is ready when it accepts a connection, whatever its paths answer (no health path)."""
    from proxy.ops.admin import _check_upstream
    from proxy.routing.table import UpstreamSpec

    async def starting(request: web.Request) -> web.Response:
        return web.Response(status=503, text="starting")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", starting)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        port = server.port or 0
        spec = UpstreamSpec("svc", f"http://127.0.0.1:{port}", "http", "127.0.0.1", port, "")
        result = await _check_upstream(spec, 1.0)
        assert result["ok"] is True
        assert "status" not in result  # no request was sent
        gone = closed_port()
        gone_spec = UpstreamSpec("x", f"http://127.0.0.1:{gone}", "http", "127.0.0.1", gone, "")
        down = await _check_upstream(gone_spec, 1.0)
        assert down["ok"] is False
    finally:
        await server.close()


async def test_a_token_guards_every_page_but_the_probes(live_state: AdminState) -> None:
    """With a token, /routes, /metrics and /report answer 401 (JSON, WWW-Authenticate) without it or with
    a wrong one, and 200 with it; /healthz and /readyz stay open for load balancers."""
    live_state.token = "the-admin-token-0123456789"
    client = await admin_client(live_state)
    try:
        for path in ("/routes", "/metrics", "/report", "/report.json"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": live_state.token}):
                resp = await client.get(path, headers=headers)
                assert resp.status == 401, (path, headers)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["error"]["code"] == "unauthorized"
        good = {"Authorization": "Bearer the-admin-token-0123456789"}
        assert (await client.get("/routes", headers=good)).status == 200
        assert (await client.get("/metrics", headers=good)).status == 200
        assert (await client.get("/report.json", headers=good)).status not in (401, 404)
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()
