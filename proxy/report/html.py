"""The shadow report on the admin port: ``/report`` (HTML), ``/report/{route}`` (example diffs) and
``/report.json``. One self-contained page: inline CSS and inline SVG charts, no external assets.

``/report`` opens with the migration's progress (``proxy.report.progress``: routes by stage, legacy's
remaining traffic over ``?window=`` (default 1h), each route's next action, charts over time, the recent
transitions) and refreshes itself every ``REFRESH_S`` seconds unless ``?refresh=0``.

``proxy.admin.create_admin_app`` calls ``setup(app, state)``. The store comes from ``app[REPORT_STORE]``
when an extension put one there, else it is opened from REDIS_URL / DATABASE_URL /
STRANGLER_SHADOW_PREFIX for the app's lifetime; without REDIS_URL the page says how to enable it. While
the app runs it also reads the report every ``VERDICTS_EVERY_S`` (``keep_verdicts``), so the stable
verdicts' state (``proxy.report.stable``: how long the threshold has held) moves on without anyone
reading the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from html import escape
from typing import Any, Final
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from proxy.report.charts import latency_chart
from proxy.report.model import NOT_ENOUGH, READY, UNAVAILABLE, Report, RouteReport, gather
from proxy.report.progress import DEFAULT_WINDOW_S, Progress, Transition, build_progress, parse_window
from proxy.report.progress_html import PROGRESS_CSS, render_progress, transitions_table
from proxy.report.progress_io import read_journey, read_progress
from proxy.report.progress_text import clock
from proxy.report.text import answered, epoch_line, fallback_line, history_lines, method_lines
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import DEFAULT_PREFIX, DiffStore, StoreError

__all__ = ["REFRESH_S", "REPORT_STORE", "VERDICTS_EVERY_S", "keep_verdicts", "render_html", "setup"]

log = logging.getLogger("strangler.report")

REFRESH_S: Final = 10  # the /report page reloads itself this often (unless ?refresh=0)
VERDICTS_EVERY_S: Final = 5.0  # how often the admin app reads the report to move the stable verdicts on

REPORT_STORE = web.AppKey("strangler_report_store", DiffStore)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:1.5em 2em;color:#24292f;
 background:#f6f8fa}
table{border-collapse:collapse;margin:1em 0;background:#fff}
th,td{border:1px solid #d0d7de;padding:.35em .6em;text-align:right}
th{background:#f6f8fa;font-weight:600}td.l,th.l{text-align:left}.READY{color:#1a7f37;font-weight:bold}
.NOT_READY{color:#b00020;font-weight:bold}.NOT_ENOUGH_DATA{color:#8a6d00}
.COMPARISON_UNAVAILABLE{color:#555;font-weight:bold}.why{display:block;font-weight:normal}
code{background:#f6f6f6;padding:0 .2em}.muted{color:#777}svg text{font:11px sans-serif}
"""


def _num(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _verdict_cell(r: RouteReport) -> str:
    why = "; ".join(r.reasons)
    css = r.verdict.replace(" ", "_")
    # Unavailable is not a judgement on new: its reason is the whole message, so it is shown, not hovered.
    reasons = r.reasons if r.verdict == UNAVAILABLE else []
    shown = "".join(f'<span class="why">{escape(w)}</span>' for w in reasons)
    return f'<td class="l {css}" title="{escape(why)}">{escape(r.verdict)}{shown}</td>'


def _row(r: RouteReport) -> str:
    lat = r.latency_ms
    link = f'<a href="/report/{escape(r.name)}">{escape(r.name)}</a>'
    paths = ", ".join(f"<code>{escape(p)}</code>&nbsp;{n}" for p, n in r.paths[:5]) or "-"
    noise = ", ".join(f"<code>{escape(p)}</code>&nbsp;{n}" for p, n in r.noise_paths[:5]) or "-"
    cells = [
        f'<td class="l">{link}</td>',
        f'<td class="l">{escape(r.target or "-")}</td>',
        f"<td>{r.counters.get('seen', 0)}</td>",
        f"<td>{r.compared}</td>",
        f"<td>{_rate(r.match_rate)}</td>",
        f"<td>{_num(lat['legacy']['p50'])} / {_num(lat['legacy']['p99'])}</td>",
        f"<td>{_num(lat['new']['p50'])} / {_num(lat['new']['p99'])}</td>",
        f"<td>{_rate(r.error_rate['legacy'])} / {_rate(r.error_rate['new'])}</td>",
        f'<td class="l">{paths}</td>',
        f'<td class="l muted">{noise}</td>',
        _verdict_cell(r),
    ]
    return f'<tr data-route="{escape(r.name)}">' + "".join(cells) + "</tr>"


def _chart(routes: list[RouteReport]) -> str:
    """Latency bars: p50 and p99 of legacy and new per route, on one millisecond axis with a legend."""
    if not routes:
        return '<p class="muted">No shadowed route yet.</p>'
    return latency_chart([(r.name, r.latency_ms) for r in routes])


def _json(value: Any) -> str:
    return escape(orjson.dumps(value).decode())


def _example(ex: dict[str, Any]) -> str:
    head = (
        f"<h3><code>{escape(ex['method'])} {escape(ex['path'])}</code></h3>"
        f"<p>legacy {answered(ex['control_status'], ex['control_ms'])}, new "
        f"{answered(ex['candidate_status'], ex['candidate_ms'])}, served by {escape(ex['primary'])}"
        + (f", request id <code>{escape(ex['request_id'])}</code>" if ex.get("request_id") else "")
        + "</p>"
    )
    rows = "".join(
        f'<tr class="diff"><td class="l"><code>{escape(d["path"])}</code></td>'
        f'<td class="l">{escape(d["kind"])}</td><td class="l"><code>{_json(d["control"])}</code></td>'
        f'<td class="l"><code>{_json(d["candidate"])}</code></td></tr>'
        for d in ex["diff"]
    )
    bodies = (
        f'<tr><td class="l" colspan="2">body</td><td class="l"><pre>{escape(ex["control_body"])}</pre></td>'
        f'<td class="l"><pre>{escape(ex["candidate_body"])}</pre></td></tr>'
    )
    return (
        head + '<table class="example"><tr><th class="l">path</th><th class="l">kind</th>'
        f'<th class="l">legacy (control)</th><th class="l">new (candidate)</th></tr>{rows}{bodies}</table>'
    )


def _learned(r: RouteReport) -> str:
    """A route's generated paths (with their rate), noise paths (with both rates) and races."""
    items = [
        f"<li>generated {escape(g['method'])} <code>{escape(g['path'])}</code>: same shape, other value in "
        f"{g['rate']:.1%} of {g['compared']} ({'learned' if g['learned'] else 'compare.generated'})</li>"
        for g in r.generated
    ]
    items += [
        f"<li>noise {escape(n['method'])} <code>{escape(n['path'])}</code>: A/A {n['aa_rate']:.1%} of "
        f"{n['aa_pairs']}, new {n['candidate_rate']:.1%} of {n['compared']}</li>"
        for n in r.noise_rates
    ]
    if r.raced:
        items.append(f"<li>{r.raced} reads changed during the comparison (raced, not counted)</li>")
    return "<h2>Learned</h2><ul>" + "".join(items) + "</ul>" if items else ""


def _top(title: str, generated_at: float, refresh: bool, window: str | None) -> str:
    """The page header: title, generated-at time, and the auto-refresh state with its switch."""
    keep = f"window={quote(window)}" if window else ""
    off = "/report?" + "&amp;".join(filter(None, (keep, "refresh=0")))
    on = "/report" + (f"?{keep}" if keep else "")
    switch = (
        f'auto-refresh every {REFRESH_S} s (<a id="refresh-off" href="{off}">turn off</a>)'
        if refresh
        else f'auto-refresh off (<a id="refresh-on" href="{on}">turn on</a>)'
    )
    return (
        f'<header class="top"><h1>{escape(title)}</h1><span class="meta" id="generated">generated at '
        f"{clock(generated_at, True)} · {switch}</span></header>"
    )


def render_html(
    report: Report, route: str | None = None, *, progress: Progress | None = None, refresh: bool = False,
    note: str = "", window: str | None = None, journey: list[Transition] | None = None,
) -> str:  # fmt: skip
    """The report page (all routes; opening with the migration ``progress`` when given), or one route's page
    with its example diffs side by side. ``refresh``: reload every ``REFRESH_S`` seconds (a meta refresh)."""
    shown = [r for r in report.routes if route is None or r.name == route]
    title = "Shadow comparison report" + (f": {route}" if route else "")
    if progress is not None:
        title = "Migration progress"
    head = (
        "<tr>" + "".join(f'<th class="l">{h}</th>' if h in ("route", "target", "differing paths", "noise",
                                                               "verdict") else f"<th>{h}</th>"
                         for h in ("route", "target", "seen", "compared", "match", "legacy p50 / p99 ms",
                                   "new p50 / p99 ms", "errors legacy / new", "differing paths", "noise",
                                   "verdict")) + "</tr>"
    )  # fmt: skip
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    body = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}<title>{escape(title)}</title>"
        f"<style>{_CSS}{PROGRESS_CSS}</style></head><body>",
        _top(title, report.generated_at, refresh, window),
        render_progress(progress, refresh, note) if progress is not None else "",
        '<section class="card"><h2>Shadow comparison</h2>' if progress is not None else "",
        f'<p class="muted">Verdict: {READY} needs at least {report.min_compared} comparisons and a match '
        f"rate of {report.match_threshold:.1%}; {NOT_ENOUGH} below that; {UNAVAILABLE} where nothing can be "
        "compared (streams, writes after a flip, a shadow side not answering). Legacy is the control, new "
        "the candidate."
        + (' <a href="/report">All routes</a>' if route else "") + "</p>",
        f'<table id="routes">{head}' + "".join(_row(r) for r in shown) + "</table>",
        _epochs(shown),
        "<h2>Latency</h2>",
        _chart(shown),
        "</section>" if progress is not None else "",
    ]
    if route:
        for r in shown:
            if r.reasons:
                body.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in r.reasons) + "</ul>")
            body.append(_learned(r))
            if journey is not None:  # the autopilot's audit events of this route, oldest first
                body.append("<h2>Journey</h2>" + transitions_table(journey, report.generated_at, "journey"))
            body.append("<h2>Example diffs</h2>")
            examples = [_example(ex) for ex in r.examples]
            body += examples or ['<p class="muted">No stored differing sample.</p>']
    body.append("</body></html>")
    return "".join(body)


def _epochs(routes: list[RouteReport]) -> str:
    """Per route: the epoch counted, its methods, and (when read) its history."""
    items = []
    for r in routes:
        lines = [line for line in (epoch_line(r), *method_lines(r), fallback_line(r)) if line]
        lines += [f"history: {line}" for line in history_lines(r)]
        if lines:
            inner = "".join(f"<li>{escape(line)}</li>" for line in lines)
            items.append(f'<li data-route="{escape(r.name)}"><b>{escape(r.name)}</b><ul>{inner}</ul></li>')
    return f'<h2>Epochs and methods</h2><ul id="epochs">{"".join(items)}</ul>' if items else ""


async def _report(request: web.Request, route: str | None) -> Report:
    store = request.app.get(REPORT_STORE)
    if store is None:
        raise web.HTTPServiceUnavailable(
            text="The shadow report needs Redis: set REDIS_URL (and DATABASE_URL for example diffs) "
            "for the gateway and restart it.\n"
        )
    table = request.app[_STATE].table
    try:
        # A route's page (or ?epoch=all) lists every kept epoch of the route(s).
        history = request.query.get("epoch") == "all" or request.match_info.get("route") is not None
        return await gather(store, table, route, history=history)
    except StoreError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None


def _window(request: web.Request) -> tuple[str | None, float]:
    """``?window=`` (None and the default when absent); a bad one is a 400 saying what is expected."""
    raw = request.query.get("window")
    if raw is None:
        return None, DEFAULT_WINDOW_S
    try:
        return raw, parse_window(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


async def _progress(request: web.Request, report: Report, window_s: float) -> tuple[Progress, str]:
    """The progress overview, and a note when the stages, served counts and transitions cannot be read
    (a store without Redis: only the route table's stages are shown)."""
    store = request.app.get(REPORT_STORE)
    table = request.app[_STATE].table
    redis = getattr(store, "redis", None)
    if redis is not None:
        prefix = getattr(store, "prefix", DEFAULT_PREFIX)
        cache = request.app[_BUCKETS]
        try:
            return await read_progress(redis, prefix, table, report, window_s, cache=cache), ""
        except (OSError, ConnectionError, aioredis.RedisError) as exc:
            note = f"could not read the rollout state and served traffic from Redis ({type(exc).__name__})"
            return build_progress(table, report, {}, [], [], [], window_s), note
    note = "served traffic, auto stages and transitions are read from Redis: this store has none"
    return build_progress(table, report, {}, [], [], [], window_s), note


async def report_page(request: web.Request) -> web.Response:
    """GET /report: the migration's progress, then every route (``?window=1h``, ``?refresh=0``)."""
    raw_window, window_s = _window(request)
    report = await _report(request, None)
    progress, note = await _progress(request, report, window_s)
    refresh = request.query.get("refresh", "1") not in ("0", "off", "false", "no")
    page = render_html(report, progress=progress, refresh=refresh, note=note, window=raw_window)
    return web.Response(text=page, content_type="text/html")


async def report_route_page(request: web.Request) -> web.Response:
    """GET /report/{route}: one route with example diffs."""
    name = request.match_info["route"]
    report = await _report(request, name)
    if report.route(name) is None:
        raise web.HTTPNotFound(text=f"no shadowed route named {name!r}; see /report for the list\n")
    journey: list[Transition] | None = None
    store = request.app.get(REPORT_STORE)
    redis = getattr(store, "redis", None)
    if redis is not None:
        with contextlib.suppress(OSError, ConnectionError, aioredis.RedisError):
            journey = await read_journey(redis, getattr(store, "prefix", DEFAULT_PREFIX), name)
    return web.Response(text=render_html(report, name, journey=journey), content_type="text/html")


async def report_json(request: web.Request) -> web.Response:
    """GET /report.json: the report as JSON (``?route=NAME`` adds that route's example diffs,
    ``?epoch=all`` every kept epoch's totals), with the migration's ``progress`` over ``?window=``."""
    _, window_s = _window(request)
    report = await _report(request, request.query.get("route"))
    progress, _ = await _progress(request, report, window_s)
    doc = {"progress": progress.as_json(), **report.as_json()}
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def _env_store(app: web.Application) -> AsyncIterator[None]:
    redis_url = os.environ.get("REDIS_URL")
    store = None
    if redis_url:
        prefix = os.environ.get("STRANGLER_SHADOW_PREFIX", DEFAULT_PREFIX)
        store = await RedisPgStore.connect_lenient(redis_url, os.environ.get("DATABASE_URL"), prefix)
        app[REPORT_STORE] = store
    try:
        yield
    finally:
        if store is not None:
            await store.aclose()


_STATE: web.AppKey[Any] = web.AppKey("strangler_report_admin_state", object)
# The complete served and match-rate buckets already read (proxy.shadow.redis_counters.read_buckets): the
# page refreshes itself every REFRESH_S seconds and would otherwise read a window's buckets each time.
_BUCKETS: web.AppKey[dict[tuple[str, int], dict[str, int]]] = web.AppKey("strangler_report_buckets", dict)


async def keep_verdicts(app: web.Application, interval: float | None = None) -> None:
    """Read the report every ``interval`` seconds (``VERDICTS_EVERY_S``) so that the stable verdicts'
    state is kept current (runs until cancelled; a failed read is logged once per streak)."""
    failing = False
    while True:
        await asyncio.sleep(VERDICTS_EVERY_S if interval is None else interval)
        store = app.get(REPORT_STORE)
        if store is None:
            continue
        try:
            await gather(store, app[_STATE].table)
            failing = False
        except Exception as exc:  # the stores log their own failures; this task must outlive any one
            if not failing:
                log.warning("could not read the shadow report to keep the verdicts current: %r", exc)
            failing = True


async def _verdicts(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(keep_verdicts(app), name="report-verdicts")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(app: web.Application, state: Any) -> None:
    """Add the report routes to the admin app (``state.table`` is the live route table)."""
    app[_STATE] = state
    app[_BUCKETS] = {}
    app.router.add_get("/report", report_page)
    app.router.add_get("/report.json", report_json)
    app.router.add_get("/report/{route}", report_route_page)
    if REPORT_STORE not in app:
        app.cleanup_ctx.append(_env_store)
    app.cleanup_ctx.append(_verdicts)
