"""Structured logs: one JSON object per line, access lines carry the request id, access log can be off."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.opshelp import routes_text, start_gateway, upstream
from support.waiting import eventually

from proxy.ops.logs import JsonFormatter, access, event, setup_logging


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """setup_logging() reconfigures process-wide loggers: put them back for the other tests."""
    names = ("strangler", "strangler.access", "aiohttp")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level, lg.disabled) for lg in loggers]
    yield
    for lg, handlers, propagate, level, disabled in saved:
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled
        lg.setLevel(level)


def test_events_are_single_json_lines_with_fields() -> None:
    """event() writes one JSON object per line with ts, level, msg and the given fields."""
    stream = io.StringIO()
    setup_logging("info", access=True, stream=stream)
    try:
        event("routes reloaded", sha256="abc", routes=3)
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("strangler").exception("failed")
    finally:
        setup_logging("info", access=True, stream=io.StringIO())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "routes reloaded"
    assert first["level"] == "info"
    assert (first["sha256"], first["routes"]) == ("abc", 3)
    assert "boom" in second["exc"]


def test_access_log_off_writes_nothing() -> None:
    """With the access log off, access() writes no line; with it on, one line with the request id."""
    stream = io.StringIO()
    setup_logging("info", access=False, stream=stream)
    access("rid-1", "GET", "/x", 200, "r", "new", 0.001)
    assert stream.getvalue() == ""
    setup_logging("info", access=True, stream=stream)
    access("rid-2", "GET", "/x", 200, "r", "new", 0.001)
    line = json.loads(stream.getvalue())
    assert line["request_id"] == "rid-2"
    assert line["duration_ms"] == 1.0
    setup_logging("info", access=True, stream=io.StringIO())


def test_formatter_output_is_valid_json_for_odd_values() -> None:
    """Values JSON cannot encode natively are stringified rather than breaking the line."""
    record = logging.LogRecord("strangler", logging.INFO, __file__, 1, "m %s", ("x",), None)
    record.fields = {"path": Path("/tmp/r.yaml"), "raw": b"\x00"}
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "m x"
    assert out["path"] == "/tmp/r.yaml"


async def test_gateway_access_lines_carry_the_request_id(tmp_path: Path) -> None:
    """A real gateway logs only JSON lines; the access line's request_id is the X-Request-Id sent back."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "new"))
        gw = await start_gateway(path)
        try:
            async with aiohttp.ClientSession() as session, session.get(gw.url + "/items/9") as resp:
                assert resp.status == 200
                request_id = resp.headers["X-Request-Id"]
            line = await gw.wait_for("request")
        finally:
            assert await gw.stop() == 0
        assert line["request_id"] == request_id
        facts = (line["route"], line["target"], line["status"], line["path"])
        assert facts == ("items", "new", 200, "/items/9")
        assert line["peer"].startswith("127.0.0.1")
        assert line["bytes_out"] > 0
        assert all(raw.startswith("{") for raw in gw.raw), gw.raw
        assert len(gw.lines) == len(gw.raw)


async def test_gateway_durations_are_finer_than_the_event_loops_millisecond_clock(tmp_path: Path) -> None:
    """Request durations are timed with a fine clock, not uvloop's cached whole-millisecond loop.time()."""
    async with upstream("legacy") as leg, upstream("new") as new:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_text(leg.url, new.url, "new"))
        gw = await start_gateway(path)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(20):
                    async with session.get(gw.url + "/items/9") as resp:
                        assert resp.status == 200
            await eventually(
                lambda: len([x for x in gw.lines if x.get("msg") == "request"]) >= 20, what="20 access lines"
            )
        finally:
            assert await gw.stop() == 0
        durations = [x["duration_ms"] for x in gw.lines if x.get("msg") == "request"]
        # A loopback request takes well under a millisecond: a ms-resolution clock gives 0.0 or 1.0.
        assert any(d != int(d) for d in durations), durations
