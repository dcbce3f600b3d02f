"""The progress overview that opens the /report page: a summary bar of routes by stage, legacy's remaining
traffic, a table of every route (stage, share served by new, match, next action, blocks), two charts
over time (share served by new, match rate) and the recent transitions. HTML fragments and their CSS."""

from __future__ import annotations

from html import escape
from typing import Final
from urllib.parse import urlencode

from proxy.report.charts import PALETTE, Line, line_chart
from proxy.report.progress import (
    CANARY,
    LEGACY,
    MIGRATED,
    NOT_NEEDED,
    SHADOWING,
    STAGES,
    Point,
    Progress,
    RouteProgress,
    Transition,
    age,
    window_text,
)
from proxy.report.progress_text import clock, legacy_line

__all__ = ["PROGRESS_CSS", "STAGE_COLORS", "WINDOWS", "render_progress", "transitions_table"]

STAGE_COLORS: Final = {
    LEGACY: "#8c959f", SHADOWING: "#bf8700", CANARY: "#8250df", MIGRATED: "#0b57d0", NOT_NEEDED: "#1a7f37",
}  # fmt: skip
WINDOWS: Final = (("15m", 900.0), ("1h", 3600.0), ("6h", 21600.0), ("1d", 86400.0))

PROGRESS_CSS = """
header.top{display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap;gap:.5em;
 border-bottom:1px solid #d0d7de;padding-bottom:.6em;margin-bottom:1em}
header.top h1{margin:0;font-size:1.6em}.meta{color:#57606a;font-size:.92em}.meta a{color:#0b57d0}
section.card{border:1px solid #d0d7de;border-radius:8px;padding:1em 1.2em;margin:0 0 1.2em;background:#fff}
section.card h2{margin:0 0 .6em;font-size:1.15em}
.stagebar{display:flex;height:30px;border-radius:6px;overflow:hidden;margin:.4em 0 .6em;background:#eaeef2}
.stagebar div{color:#fff;font-weight:600;font-size:.9em;display:flex;align-items:center;
 justify-content:center;white-space:nowrap;overflow:hidden}
.chips{display:flex;gap:.6em;flex-wrap:wrap}.chip{display:inline-flex;align-items:center;gap:.35em;
 border:1px solid #d0d7de;border-radius:999px;padding:.1em .7em;font-size:.9em;background:#f6f8fa}
.dot{width:10px;height:10px;border-radius:50%;display:inline-block}
.legacy-left{font-size:1.02em;margin:.6em 0 0}.legacy-left b{font-size:1.1em}
.windows a{margin-left:.4em}.windows a.on{font-weight:700;text-decoration:none;color:#24292f}
table.progress{width:100%;margin:.2em 0}
table.progress td,table.progress th{text-align:left;vertical-align:top}
table.progress td.num{text-align:right;white-space:nowrap}table.progress td:first-child{white-space:nowrap}
.badge{display:inline-block;border-radius:4px;padding:.05em .5em;color:#fff;font-size:.85em;font-weight:600;
 white-space:nowrap}
tr.rollback{background:#ffebe9}tr.rollback td:first-child{border-left:4px solid #cf222e}
.flag{background:#cf222e;color:#fff;border-radius:4px;padding:.05em .45em;font-weight:700;font-size:.8em;
 margin-left:.4em;white-space:nowrap}section.card h2.split{display:flex;justify-content:space-between}
.windows{font-size:.85em;font-weight:normal;color:#57606a}
.share{display:inline-block;width:70px;height:8px;background:#eaeef2;border-radius:4px;margin-right:.4em;
 vertical-align:middle;overflow:hidden}.share i{display:block;height:100%;background:#0b57d0}
.next{font-weight:600}.next.act-roll-back{color:#cf222e}.next.act-flip,.next.act-promote,
.next.act-stop-legacy{color:#1a7f37}.blocks{margin:0;padding-left:1.1em;color:#57606a;font-size:.9em}
.charts{display:flex;flex-wrap:wrap;gap:1.2em}
svg.chart{background:#fff}svg.chart text{font:11px system-ui,sans-serif;fill:#424a53}
svg.chart text.title{font-weight:600;font-size:12.5px;fill:#24292f}svg.chart .grid{stroke:#eaeef2}
svg.chart .axis,svg.chart .tickmark{stroke:#8c959f}svg.chart text.axis-title{fill:#57606a;font-style:italic}
table.transitions td,table.transitions th{text-align:left;font-size:.92em}.muted{color:#57606a}
"""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _badge(r: RouteProgress) -> str:
    color = STAGE_COLORS.get(r.stage, "#57606a")
    return f'<span class="badge stage" style="background:{color}">{escape(r.label)}</span>'


def _stagebar(p: Progress) -> str:
    total = len(p.routes) or 1
    cells = []
    for stage in STAGES:
        n = p.stages.get(stage, 0)
        if n:
            cells.append(
                f'<div data-stage="{escape(stage)}" style="flex:{n};background:{STAGE_COLORS[stage]}" '
                f'title="{n} {escape(stage)}">{n}</div>'
            )
    chips = "".join(
        f'<span class="chip" data-stage="{escape(s)}"><span class="dot" style="background:{STAGE_COLORS[s]}">'
        f"</span>{escape(s)} <b>{p.stages.get(s, 0)}</b></span>"
        for s in STAGES
    )
    share = sum(1 for r in p.routes if r.stage in (MIGRATED, NOT_NEEDED)) / total
    return (
        f'<div class="stagebar" id="stage-summary" aria-label="routes by stage">{"".join(cells)}</div>'
        f'<div class="chips">{chips}<span class="chip">migrated or done <b>{share:.0%}</b> of '
        f"{len(p.routes)} routes</span></div>"
    )


def _windows(current: float, refresh: bool) -> str:
    links = []
    for label, seconds in WINDOWS:
        query = {"window": label, **({} if refresh else {"refresh": "0"})}
        on = ' class="on"' if seconds == current else ""
        links.append(f'<a{on} href="/report?{urlencode(query)}">{label}</a>')
    return f'<span class="windows">window:{"".join(links)}</span>'


def _row(r: RouteProgress, now: float) -> str:
    share = r.new_share
    bar = f'<span class="share"><i style="width:{(share or 0) * 100:.1f}%"></i></span>'
    served = f"{bar}{_pct(share)}" if share is not None else '<span class="muted">no traffic</span>'
    flag = '<div><span class="flag">ROLL BACK</span></div>' if r.rollback else ""
    blocks = [b for b in r.blocks if b not in r.next]
    listed = (
        "<ul class=blocks>" + "".join(f"<li>{escape(b)}</li>" for b in blocks) + "</ul>" if blocks else "-"
    )
    act = "act-" + r.action.replace(" ", "-")
    since = f'<div class="muted">for {age(max(0.0, now - r.since))}</div>' if r.since else ""
    return (
        f'<tr class="{"rollback" if r.rollback else ""}" data-route="{escape(r.name)}" '
        f'data-stage="{escape(r.stage)}"><td><a href="/report/{escape(r.name)}">{escape(r.name)}</a>{flag}'
        f'<div class="muted">target: {escape(r.target)}</div></td><td>{_badge(r)}{since}</td>'
        f'<td class="num">{served}<div class="muted">{r.served_new:,} new / {r.served_legacy:,} legacy</div>'
        "</td>"
        f'<td class="num">{_pct(r.match_rate)}<div class="muted">{r.compared:,} compared</div></td>'
        f'<td><span class="next {act}">{escape(r.next)}</span></td><td>{listed}</td></tr>'
    )


def _lines(points: list[Point], overall: str) -> list[Line]:
    names = list(points[0].routes) if points else []
    out = [Line(overall, "#24292f", [(pt.t, pt.overall) for pt in points], 2.4)]
    for i, name in enumerate(names):
        out.append(Line(name, PALETTE[i % len(PALETTE)], [(pt.t, pt.routes.get(name)) for pt in points]))
    return out


def _match_range(points: list[Point]) -> tuple[float, float]:
    """Match rates sit near 100 %: zoom the axis to the lowest value seen (in 5 % steps), at most 0-100 %."""
    values = [v for pt in points for v in (pt.overall, *pt.routes.values()) if v is not None]
    low = min(values, default=0.9)
    floor = max(0.0, min(0.9, int(low * 20) / 20))
    return floor, 1.0


def _charts(p: Progress) -> str:
    t1 = p.generated_at
    t0 = t1 - p.window_s
    lines = _lines(p.share, "all routes")
    share = line_chart("share-chart", "Share of requests served by new", lines, t0, t1, y_title="by new")
    match = line_chart("match-chart", "Shadow match rate", _lines(p.match, "all compared"), t0, t1,
                       y_range=_match_range(p.match), y_label=lambda v: f"{v:.1%}" if v < 1 else "100%",
                       y_title="match rate")  # fmt: skip
    return f'<div class="charts">{share}{match}</div>'


def _transitions(p: Progress) -> str:
    return transitions_table(p.transitions, p.generated_at, "transitions")


def transitions_table(transitions: list[Transition], now: float, table_id: str) -> str:
    """Audit events as a table (the overview's recent ones, or one route's journey)."""
    if not transitions:
        return '<p class="muted">No transition recorded yet (the autopilot writes one per stage change).</p>'
    rows = "".join(
        f'<tr data-action="{escape(t.action)}"><td>{clock(t.at)}</td><td class="muted">'
        f"{age(max(0.0, now - t.at))} ago</td><td>{escape(t.route)}</td>"
        f"<td><b>{escape(t.action)}</b></td><td>{t.from_pct}% → {t.to_pct}%</td><td>{escape(t.who)}</td>"
        f"<td>{escape(t.why)}</td></tr>"
        for t in transitions
    )
    head = "".join(f"<th>{h}</th>" for h in ("time (UTC)", "", "route", "action", "new serves", "by", "why"))
    return f'<table class="transitions" id="{table_id}"><tr>{head}</tr>{rows}</table>'


def render_progress(p: Progress, refresh: bool, note: str = "") -> str:
    """The overview's sections (``refresh``: whether the page refreshes itself, kept in the window links;
    ``note``: why some inputs are missing, shown under the summary)."""
    flagged = [r for r in p.routes if r.rollback]
    alert = ""
    if flagged:
        names = ", ".join(f"<b>{escape(r.name)}</b>" for r in flagged)
        alert = f'<p class="flag-line"><span class="flag">ROLL BACK</span> suggested for {names}</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "route",
            "stage",
            f"served by new ({window_text(p.window_s)})",
            "match",
            "next action",
            "blocks",
        )
    )
    rows = (
        "".join(_row(r, p.generated_at) for r in p.routes)
        or '<tr><td colspan="6" class="muted">no routes</td></tr>'
    )
    return (
        f'<section class="card" id="progress"><h2 class="split"><span>Routes by stage</span>'
        f"{_windows(p.window_s, refresh)}</h2>"
        f"{_stagebar(p)}{alert}"
        f'<p class="legacy-left" id="legacy-left">{escape(legacy_line(p))}</p>'
        + (f'<p class="muted">{escape(note)}</p>' if note else "")
        + f'</section><section class="card"><h2>Routes</h2><table class="progress" id="progress-routes">'
        f"<tr>{head}</tr>{rows}</table></section>"
        f'<section class="card"><h2>Over time (last {window_text(p.window_s)})</h2>{_charts(p)}</section>'
        f'<section class="card"><h2>Recent transitions</h2>{_transitions(p)}</section>'
    )
