"""The /report page's progress overview, rendered by headless chromium from a realistic migration written
into the real Redis (tests/report/progress_rig.py); screenshots for a person to check."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from report.progress_rig import seed
from report.test_report_web import chromium, dump_dom, serve_report

from proxy.shadow.redis_pg import RedisPgStore

# Where the screenshots go (the person checking them sets it; else the test's temporary directory).
SHOTS_ENV = "STRANGLER_SCREENSHOTS"


@pytest.fixture
async def admin(redis_url: str, redis_prefix: str) -> AsyncIterator[str]:
    """The admin app on a loopback port, its report and progress read from the seeded Redis."""
    table = await seed(redis_url, redis_prefix, time.time())
    store = await RedisPgStore.connect(redis_url, None, redis_prefix)
    try:
        async with serve_report(table, store) as url:
            yield url
    finally:
        await store.aclose()


async def screenshot(url: str, path: Path, height: int) -> None:
    """A PNG of ``url`` 1400 pixels wide and ``height`` high, by headless chromium."""
    with tempfile.TemporaryDirectory(prefix="strangler-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size=1400,{height}",
            f"--screenshot={path}", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(proc.wait(), 45) == 0
    assert (await asyncio.to_thread(path.read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
@pytest.mark.timeout(600)  # only if chromium has to be installed first; rendering takes a few seconds
async def test_progress_overview_in_headless_chromium(admin: str, tmp_path: Path) -> None:
    """The page opens with routes by stage, the roll-back flag, the routes table with next actions, both
    charts with axes and legends, the latency chart's legend and axis, the transitions, a generated-at
    time and a refresh every 10 s; no external assets."""
    dom = await dump_dom(admin + "/report")
    assert '<meta http-equiv="refresh" content="10">' in dom and "generated at" in dom
    summary = dom[dom.index('id="stage-summary"') :]
    stages = {"legacy": 1, "shadowing": 2, "canary": 1, "migrated": 3, "legacy no longer needed": 1}
    for stage, n in stages.items():
        assert f'data-stage="{stage}"><span class="dot"' in summary and f"{stage} <b>{n}</b>" in summary
    assert '<tr class="rollback" data-route="comments"' in dom and "ROLL BACK" in dom
    assert "roll back: differing since its flip" in dom
    assert 'data-route="posts-list" data-stage="canary"' in dom and "canary 10%" in dom
    assert "stop legacy for this route" in dom and "flip: READY for 3 min" in dom
    for chart in ("share-chart", "match-chart"):
        svg = dom[dom.index(f'<svg id="{chart}"') :]
        svg = svg[: svg.index("</svg>")]
        assert 'class="axis x-axis"' in svg and 'class="axis y-axis"' in svg and "time (UTC)" in svg
        assert svg.count('class="tick x-tick"') >= 3 and svg.count('class="tick y-tick"') == 5
        assert svg.count('class="legend-item"') >= 2 and 'class="series"' in svg
    latency = dom[dom.index('<svg id="latency-chart"') :]
    assert "legacy p50" in latency and "new p99" in latency and "milliseconds" in latency
    assert '<table class="transitions" id="transitions">' in dom and "manual-promote" in dom
    assert "http://" not in dom.replace(admin, "").replace("http://www.w3.org/2000/svg", "")
    off = await dump_dom(admin + "/report?refresh=0&window=15m")
    assert 'http-equiv="refresh"' not in off and "auto-refresh off" in off and "last 15 min" in off
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    await screenshot(admin + "/report?refresh=0", shots / "progress.png", 1300)
    await screenshot(admin + "/report?refresh=0", shots / "progress-full.png", 2700)


async def test_a_route_page_shows_its_journey(admin: str) -> None:
    """/report/{route} lists the route's transitions oldest first: promoted, rolled back, promoted again."""
    async with aiohttp.ClientSession() as session, session.get(admin + "/report/posts-list") as resp:
        assert resp.status == 200
        page = await resp.text()
    journey = page[page.index('id="journey"') :]
    actions = re.findall(r'data-action="([a-z-]+)"', journey)
    assert actions == ["promote", "rollback", "promote"]
    assert "new 5xx 6.2% &gt; 5.0% (rollback.error_rate)" in journey


async def test_progress_json_and_a_bad_window(admin: str) -> None:
    """/report.json carries the progress overview; ?window= with a bad value is a 400 saying why."""
    async with aiohttp.ClientSession() as session:
        async with session.get(admin + "/report.json?window=15m") as resp:
            assert resp.status == 200
            doc = orjson.loads(await resp.read())
        async with session.get(admin + "/report?window=soon") as resp:
            assert resp.status == 400 and "such as 30m" in await resp.text()
    progress = doc["progress"]
    assert progress["window_s"] == 900 and progress["stages"]["canary"] == 1
    assert [r["name"] for r in progress["routes"] if r["rollback"]] == ["comments"]
