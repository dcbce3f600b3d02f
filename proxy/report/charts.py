"""Inline SVG charts for the report page: lines over time and latency bars, each with axes, tick labels
and a legend. No scripts, no external assets: the page must render from the admin port alone."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["PALETTE", "Line", "latency_chart", "line_chart", "nice_ticks", "time_ticks"]

# Colour-blind-safe enough to tell six lines apart; the first is the "overall" line.
PALETTE: Final = ("#0b57d0", "#e8710a", "#1e8e3e", "#9334e6", "#d93025", "#12b5cb", "#795548")
_TIME_STEPS: Final = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True)
class Line:
    """One line: its legend label, colour, points (time, value or None: a gap) and width."""

    label: str
    color: str
    points: Sequence[tuple[float, float | None]]
    width: float = 1.6


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Ticks from 0 to at least ``top`` at a 1, 2 or 5 x 10^k step, about ``count`` of them."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def time_ticks(t0: float, t1: float, count: int = 6) -> list[float]:
    """Round wall times between ``t0`` and ``t1`` (at most about ``count``)."""
    span = max(1.0, t1 - t0)
    step = next((s for s in _TIME_STEPS if span / s <= count), 86400 * math.ceil(span / 86400 / count))
    first = math.ceil(t0 / step) * step
    return [float(t) for t in range(int(first), int(t1) + 1, int(step))]


def _hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


def _legend(lines: Sequence[Line], left: float, right: float) -> tuple[list[str], int]:
    """The legend's items (a swatch and a label per line) wrapped into rows below the title; the rows."""
    parts, x, row = [], left, 0
    for line in lines:
        label = line.label if len(line.label) <= 22 else line.label[:21] + "…"
        step = 30 + 6.3 * len(label)
        if x + step > right and x > left:
            x, row = left, row + 1
        y = 22 + 14 * row
        parts.append(
            f'<g class="legend-item"><rect x="{x:.0f}" y="{y}" width="14" height="4" fill="{line.color}"/>'
            f'<text x="{x + 18:.0f}" y="{y + 6}">{escape(label)}</text></g>'
        )
        x += step
    return parts, row + 1


def line_chart(
    chart_id: str, title: str, lines: Sequence[Line], t0: float, t1: float, *,
    y_range: tuple[float, float] = (0.0, 1.0), y_label: Callable[[float], str] = lambda v: f"{v:.0%}",
    y_title: str = "", width: int = 640, height: int = 260,
) -> str:  # fmt: skip
    """A line chart over time: y axis with gridlines and labels, time axis (UTC), legend above."""
    left, right, bottom = 62, 14, 36
    legend, rows = _legend(lines, left, width - right)
    top = 34 + 14 * rows
    w, h = width - left - right, height - top - bottom
    lo, hi = y_range
    span_t = max(1.0, t1 - t0)

    def x(t: float) -> float:
        return left + w * (t - t0) / span_t

    def y(v: float) -> float:
        return top + h * (1 - (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0))

    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text class="title" x="{left}" y="14">{escape(title)}</text>',
    ]
    for i in range(5):  # y gridlines and labels
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        parts.append(f'<text class="tick y-tick" x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
                     f"{escape(y_label(v))}</text>")  # fmt: skip
    for t in time_ticks(t0, t1):
        parts.append(
            f'<line class="tickmark" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + h}" y2="{top + h + 4}"/>'
        )
        parts.append(f'<text class="tick x-tick" x="{x(t):.1f}" y="{top + h + 16}" text-anchor="middle">'
                     f"{_hhmm(t)}</text>")  # fmt: skip
    parts.append(f'<line class="axis x-axis" x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}"/>')
    parts.append(f'<line class="axis y-axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + h}"/>')
    parts.append(
        f'<text class="axis-title" x="{left + w}" y="{height - 4}" text-anchor="end">time (UTC)</text>'
    )
    if y_title:
        parts.append(f'<text class="axis-title" transform="translate(14 {top + h / 2:.0f}) rotate(-90)" '
                     f'text-anchor="middle">{escape(y_title)}</text>')  # fmt: skip
    drawn = 0
    for line in lines:
        path: list[str] = []
        alone: list[tuple[float, float]] = []
        pen_up = True
        pts = list(line.points)
        for i, (t, value) in enumerate(pts):
            if value is None:
                pen_up = True
                continue
            path.append(f"{'M' if pen_up else 'L'}{x(t):.1f},{y(value):.1f}")
            before = pts[i - 1][1] if i > 0 else None
            after = pts[i + 1][1] if i + 1 < len(pts) else None
            if before is None and after is None:
                alone.append((x(t), y(value)))  # a lone point draws no segment: a dot instead
            pen_up = False
        if path:
            drawn += 1
            parts.append(f'<path class="series" data-label="{escape(line.label)}" d="{" ".join(path)}" '
                         f'fill="none" stroke="{line.color}" stroke-width="{line.width}" '
                         'stroke-linejoin="round"/>')  # fmt: skip
            parts += [
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{line.color}"/>' for cx, cy in alone
            ]
    if not drawn:
        parts.append(f'<text class="empty" x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle">'
                     "no data in the window</text>")  # fmt: skip
    parts += legend
    parts.append("</svg>")
    return "".join(parts)


def latency_chart(rows: Sequence[tuple[str, dict[str, dict[str, float | None]]]], width: int = 760) -> str:
    """Per route, a bar per side: p99 (light) with p50 over it (full colour), on one millisecond axis
    with ticks, and a legend. ``rows``: (route, {"legacy"|"new": {"p50", "p99"}}) in milliseconds."""
    colors = {"legacy": "#8c959f", "new": "#0b57d0"}
    values = [v for _, lat in rows for side in lat.values() for v in side.values() if v is not None]
    ticks = nice_ticks(max(values, default=1.0) or 1.0)
    top_ms = ticks[-1]
    left, right, head, bar_h, gap = 170, 160, 34, 12, 10
    w = width - left - right
    height = head + len(rows) * (2 * bar_h + 4 + gap) + 30

    def x(ms: float) -> float:
        return left + w * ms / top_ms

    parts = [
        f'<svg id="latency-chart" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="latency p50 and p99 per route, legacy versus new">'
    ]
    lx = left
    for side in ("legacy", "new"):
        for q, opacity in (("p50", 1.0), ("p99", 0.35)):
            parts.append(
                f'<g class="legend-item"><rect x="{lx}" y="8" width="12" height="10" fill="{colors[side]}" '
                f'opacity="{opacity}"/><text x="{lx + 16}" y="17">{side} {q}</text></g>'
            )
            lx += 100
    axis_y = head + len(rows) * (2 * bar_h + 4 + gap)
    for t in ticks:
        parts.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{head - 4}" y2="{axis_y}"/>')
        parts.append(f'<text class="tick x-tick" x="{x(t):.1f}" y="{axis_y + 14}" text-anchor="middle">'
                     f"{t:g}</text>")  # fmt: skip
    parts.append(f'<line class="axis x-axis" x1="{left}" x2="{left + w}" y1="{axis_y}" y2="{axis_y}"/>')
    parts.append(
        f'<text class="axis-title" x="{left + w}" y="{axis_y + 28}" text-anchor="end">milliseconds</text>'
    )
    y = head
    for name, lat in rows:
        parts.append(f'<text class="route-label" x="{left - 8}" y="{y + bar_h + 4}" text-anchor="end">'
                     f"{escape(name)}</text>")  # fmt: skip
        for i, side in enumerate(("legacy", "new")):
            by = y + i * (bar_h + 4)
            p50, p99 = lat.get(side, {}).get("p50"), lat.get(side, {}).get("p99")
            for q, value, opacity in (("p99", p99, 0.35), ("p50", p50, 1.0)):  # p50 drawn over p99
                bw = 0.0 if value is None else max(1.0, x(value) - left)
                parts.append(
                    f'<rect class="bar {side}" data-route="{escape(name)}" data-q="{q}" x="{left}" y="{by}" '
                    f'width="{bw:.1f}" height="{bar_h}" fill="{colors[side]}" opacity="{opacity}"/>'
                )
            text = "no timing" if p99 is None else f"p50 {p50 if p50 is not None else '-'} · p99 {p99} ms"
            end = left if p99 is None else x(p99)
            parts.append(
                f'<text class="value" x="{end + 4:.1f}" y="{by + bar_h - 2}">{side} {escape(text)}</text>'
            )
        y += 2 * bar_h + 4 + gap
    parts.append("</svg>")
    return "".join(parts)
