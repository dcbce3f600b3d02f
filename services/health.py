"""Health, readiness (pings PostgreSQL and Redis) and the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from aiohttp import web

from services import db, errors
from services.context import STARTED, Ctx, json_response

VERSION = "1.0.0"
OPENAPI = Path(__file__).with_name("openapi.json")
PING_TIMEOUT = 2.0


async def health(ctx: Ctx) -> web.Response:
    """GET /health: the process is up."""
    uptime = round(time.monotonic() - ctx.request.app[STARTED], 3)
    # JavaScript prints a whole number without ".0"; so must we, to stay byte-identical.
    shown: float | int = int(uptime) if uptime.is_integer() else uptime
    return json_response(200, {"status": "ok", "version": VERSION, "uptime_s": shown})


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"failing: {text}"


async def ready(ctx: Ctx) -> web.Response:
    """GET /health/ready: 200 when PostgreSQL and Redis both answer, else 503 saying which and why."""
    checks = {"database": "ok", "redis": "ok"}
    try:
        await asyncio.wait_for(db.ping(ctx.db), PING_TIMEOUT)
    except Exception as exc:  # any failure is the answer here, not an error
        checks["database"] = _why(exc) if not isinstance(exc, TimeoutError) else "failing: timed out"
    try:
        await asyncio.wait_for(ctx.cache.ping(), PING_TIMEOUT)
    except Exception as exc:  # same: report, never raise
        checks["redis"] = _why(exc) if not isinstance(exc, TimeoutError) else "failing: timed out"
    ok = all(value == "ok" for value in checks.values())
    return json_response(200 if ok else 503, {"status": "ok" if ok else "failing", "checks": checks})


async def openapi(ctx: Ctx) -> web.Response:
    """GET /openapi.json: the document re-serialised compact (key order kept); 404 until it exists."""
    try:
        raw = await asyncio.to_thread(OPENAPI.read_bytes)
    except FileNotFoundError:
        raise errors.NotFound() from None
    return json_response(200, orjson.loads(raw))


ROUTES = (
    ("GET", "/health", health),
    ("GET", "/health/ready", ready),
    ("GET", "/openapi.json", openapi),
)
