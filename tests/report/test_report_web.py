"""The admin report page: /report.json, and /report and /report/{route} rendered by headless chromium."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from support.memstore import MemoryStore

from proxy.ops.admin import AdminState, create_admin_app
from proxy.ops.metrics import RequestStats, local_registry
from proxy.report.html import REPORT_STORE
from proxy.routing.table import RouteTable, parse_routes
from proxy.shadow.store import DiffStore, Sample

ROUTES = """\
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
default: legacy
shadow: {min_compared: 5, ready_min_s: 0, ready_min_count: 0}
routes:
  - {name: users-get, match: {methods: [GET], path: "/users/{id}"}, target: legacy, shadow: {sample: 1.0}}
  - {name: posts, match: {methods: [GET], path: /posts}, target: new, shadow: {sample: 1.0}}
"""


def chromium() -> str:
    """The chromium binary; installed with apt when missing (skip only when apt cannot run)."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is missing and cannot be installed here (needs apt-get as root): run make test")
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=False, capture_output=True, timeout=600
    )
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get could not install chromium (offline mirror?); the browser test cannot run")
    return found


async def dump_dom(url: str) -> str:
    """The DOM chromium renders for ``url`` (headless, no sandbox, no network besides the page)."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="strangler-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 45)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode()


@pytest.fixture
async def admin() -> AsyncIterator[str]:
    """The admin app on a loopback port, its report reading an in-memory store with some data."""
    store = MemoryStore()
    for _ in range(10):
        store.count("users-get", "seen")
        store.count("users-get", "compared")
        store.latency("users-get", "control", 0.004)
        store.latency("users-get", "candidate", 0.012)
    store.count("users-get", "matched", 9)
    store.differed("users-get", "$.name", ("$.name",))
    change = {"path": "$.name", "kind": "changed", "control": "Alice", "candidate": "Alice!"}
    store.sample("users-get", Sample("users-get", "$.name", "GET", "/users/7", "legacy", 200, 200, [change],
                        '{"name":"Alice"}', '{"name":"Alice!"}', 4.0, 12.0))  # fmt: skip
    store.count("posts", "compared", 2)
    store.count("posts", "matched", 2)
    await store.flush()

    async with serve_report(parse_routes(ROUTES, "routes.yaml"), store) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_report(table: RouteTable, store: DiffStore) -> AsyncIterator[str]:
    """The admin app of ``table`` on a loopback port, its report reading ``store``; yields its base URL."""
    state = AdminState(table, "routes.yaml", local_registry(RequestStats()))

    def with_store(app: web.Application, _state: Any) -> None:
        app[REPORT_STORE] = store

    runner = web.AppRunner(create_admin_app(state, [with_store]), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_report_json(admin: str) -> None:
    """/report.json has every shadowed route with its numbers and verdict."""
    async with aiohttp.ClientSession() as session, session.get(admin + "/report.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = orjson.loads(await resp.read())
    routes = {r["name"]: r for r in doc["routes"]}
    assert routes["users-get"]["compared"] == 10 and routes["users-get"]["match_rate"] == 0.9
    assert routes["users-get"]["verdict"] == "NOT READY" and routes["posts"]["verdict"] == "NOT ENOUGH DATA"
    assert routes["users-get"]["paths"] == [["$.name", 1]]


async def test_unknown_route_page_is_404(admin: str) -> None:
    """/report/{route} for a route that does not exist is a 404 that points to /report."""
    async with aiohttp.ClientSession() as session, session.get(admin + "/report/nope") as resp:
        assert resp.status == 404 and "/report" in await resp.text()


@pytest.mark.browser
@pytest.mark.timeout(600)  # only if chromium has to be installed first; rendering takes a few seconds
async def test_report_page_in_headless_chromium(admin: str) -> None:
    """Chromium renders the table rows, verdicts and the inline SVG latency chart; no external assets."""
    dom = await dump_dom(admin + "/report")
    assert '<tr data-route="users-get">' in dom and '<tr data-route="posts">' in dom
    assert "NOT READY" in dom and "NOT ENOUGH DATA" in dom and "90.0%" in dom and "$.name" in dom
    assert '<svg id="latency-chart"' in dom
    assert dom.count('class="bar legacy"') == 4 and dom.count('class="bar new"') == 4
    assert "http://" not in dom.replace(admin, "").replace("http://www.w3.org/2000/svg", "")


@pytest.mark.browser
@pytest.mark.timeout(600)  # as above
async def test_route_drill_down_in_headless_chromium(admin: str) -> None:
    """/report/{route} shows that route's example diff side by side (legacy and new columns)."""
    dom = await dump_dom(admin + "/report/users-get")
    assert '<tr data-route="users-get">' in dom and 'data-route="posts"' not in dom
    assert '<tr class="diff">' in dom and "GET /users/7" in dom
    assert '<code>"Alice"</code>' in dom and '<code>"Alice!"</code>' in dom
