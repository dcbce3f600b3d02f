"""The admin server (its own port): /healthz, /readyz, /routes, /metrics, and a place to mount more.

``create_admin_app(state, extensions)`` builds the aiohttp app. Other features add pages by passing an
extension (a callable taking the app and the state); the shadow report pages are always mounted
(``proxy.report.html.setup``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from proxy.ops.admin_auth import token_middleware
from proxy.ops.metrics import render
from proxy.report import html as report_html
from proxy.routing.model import AUTO
from proxy.routing.table import Route, RouteTable, UpstreamSpec
from proxy.server.counters import DataPathCounters

Extension = Callable[[web.Application, "AdminState"], None]


@dataclass
class ReloadStatus:
    """The outcome of the latest attempt to (re)load the routes file."""

    result: str  # "initial", "success", "failure" or "unchanged"
    at: float
    errors: list[str] = field(default_factory=list)


@dataclass
class AdminState:
    """What the admin pages read; the process (proxy/app.py) keeps it current."""

    table: RouteTable
    routes_path: str
    registry: CollectorRegistry
    health_timeout: float = 1.0
    draining: bool = False
    workers: int = 1
    workers_alive: int = 1
    last_reload: ReloadStatus = field(default_factory=lambda: ReloadStatus("initial", time.time()))
    started_at: float = field(default_factory=time.time)
    # Bearer token required by every page but /healthz and /readyz ("" = none; see admin_auth.py).
    token: str = field(default="", repr=False)
    # The data path's own view of the upstreams (errors answered, last connect outcome), when known.
    data_path: Callable[[], DataPathCounters] | None = None
    # The autopilot of this serving process (single-process mode; None with --workers, whose workers each
    # apply their own): the stages the data path applies, route -> basis points (``Gateway.stages``), and
    # this process's leader id and whether it holds the lease (``/routes``' ``rollout``).
    stages: Callable[[], Mapping[str, int]] | None = None
    rollout: Callable[[], dict[str, Any]] | None = None


STATE = web.AppKey("strangler_admin_state", AdminState)


async def _check_upstream(spec: UpstreamSpec, limit: float) -> dict[str, Any]:
    """TCP-connect to the upstream within ``limit`` seconds (an upstream spec names no health path)."""
    out: dict[str, Any] = {"url": spec.url}
    start = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
            writer.close()
    except (OSError, TimeoutError) as exc:
        out["ok"] = False
        out["error"] = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            out["error"] = f"no answer within {limit} s"
    else:
        out["ok"] = True
    out["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


def _data_path_view(seen: DataPathCounters, name: str) -> dict[str, Any]:
    """What the data path saw of upstream ``name``: its latest connect and the errors it answered."""
    state = seen.upstream_up.get(name)
    return {
        "last_connect": None if state is None else ("ok" if state[0] else "failed"),
        "since": None if state is None else state[1],
        "errors": {kind: n for (up, kind), n in sorted(seen.upstream_errors.items()) if up == name},
    }


async def healthz(request: web.Request) -> web.Response:
    """200 while the process is alive and its event loop answers."""
    state = request.app[STATE]
    return web.json_response({"status": "ok", "uptime_s": round(time.time() - state.started_at, 3)})


async def readyz(request: web.Request) -> web.Response:
    """200 only when not draining and every upstream of the live table answers; JSON lists each one.

    ``upstreams`` names each upstream ``ok`` or ``failing`` (a TCP connect now); ``checks`` adds, per
    upstream, what the data path saw (``gateway``: its latest connect, ``ok`` or ``failed``, since when,
    and the errors it answered by kind).
    """
    state = request.app[STATE]
    table = state.table
    names = sorted(table.upstreams)
    results = await asyncio.gather(
        *(_check_upstream(table.upstreams[name], state.health_timeout) for name in names)
    )
    upstreams = dict(zip(names, results, strict=True))
    if state.data_path is not None:
        # Reading workers' snapshot files is file I/O: keep it off the event loop.
        seen = await asyncio.get_running_loop().run_in_executor(None, state.data_path)
        for name, result in upstreams.items():
            result["gateway"] = _data_path_view(seen, name)
    ready = not state.draining and state.workers_alive > 0 and all(r["ok"] for r in results)
    body = {
        "status": "ready" if ready else "not_ready",
        "draining": state.draining,
        "workers": {"configured": state.workers, "alive": state.workers_alive},
        "upstreams": {name: ("ok" if r["ok"] else "failing") for name, r in upstreams.items()},
        "checks": upstreams,
    }
    return web.json_response(body, status=200 if ready else 503)


def _route_json(route: Route, stages: Mapping[str, int] | None = None) -> dict[str, Any]:
    shadow = route.shadow
    out: dict[str, Any] = {
        "name": route.name,
        "methods": sorted(route.methods) if route.methods is not None else None,
        "path": route.path,
        "target": route.target,
        "shadow": None
        if shadow is None
        else {"sample": shadow.sample, "writes": shadow.writes, "timeout": shadow.timeout},
        "line": route.line,
    }
    if stages is not None and route.target == AUTO:
        out["stage_bp"] = stages.get(route.name, 0)  # what this process applies now
    return out


async def routes(request: web.Request) -> web.Response:
    """The live table as JSON, with its file, sha256, load time and the latest reload result; an auto
    route's ``stage_bp`` (basis points new serves, as this process applies them) and ``rollout`` (this
    process's leader id and whether it holds the lease) when this process runs the autopilot."""
    state = request.app[STATE]
    table = state.table
    last = state.last_reload
    stages = dict(state.stages()) if state.stages is not None else None
    return web.json_response(
        {
            "file": state.routes_path,
            "sha256": table.sha256,
            "loaded_at": table.loaded_at,
            "last_reload": {"result": last.result, "at": last.at, "errors": last.errors},
            "upstreams": {name: spec.url for name, spec in sorted(table.upstreams.items())},
            "default": _route_json(table.default),
            "routes": [_route_json(r, stages) for r in table.routes],
            "rollout": state.rollout() if state.rollout is not None else None,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (summed over workers when there are several)."""
    registry = request.app[STATE].registry
    # Rendering reads snapshot files when there are workers: keep that off the event loop.
    body = await asyncio.get_running_loop().run_in_executor(None, render, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_admin_app(state: AdminState, extensions: Iterable[Extension] = ()) -> web.Application:
    """Build the admin app with the report pages; each extension may add routes."""
    app = web.Application(middlewares=[token_middleware(state.token)] if state.token else [])
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/routes", routes)
    app.router.add_get("/metrics", metrics)
    for extend in extensions:
        extend(app, state)
    report_html.setup(app, state)
    return app
