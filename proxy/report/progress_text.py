"""The progress overview as text: the opening of ``strangler report`` in the terminal and in Markdown."""

from __future__ import annotations

import time

from proxy.report.progress import STAGES, Progress, RouteProgress, Transition, age, window_text

__all__ = ["clock", "legacy_line", "progress_markdown", "progress_terminal", "stage_line", "transition_line"]


def clock(t: float, date: bool = False) -> str:
    """A wall time in UTC: ``21:30:05`` (with the date: ``2026-12-06 21:30:05 UTC``)."""
    fmt = "%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S"
    return time.strftime(fmt, time.gmtime(t))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def stage_line(p: Progress) -> str:
    """``6 routes: 2 legacy, 1 shadowing, 1 canary, 1 migrated, 1 legacy no longer needed``."""
    parts = ", ".join(f"{p.stages.get(s, 0)} {s}" for s in STAGES)
    return f"{len(p.routes)} routes: {parts}"


def legacy_line(p: Progress) -> str:
    """What legacy still served in the window, every route and the default route included."""
    window = window_text(p.window_s)
    if not p.total_requests:
        return f"no traffic served in the last {window} (or no gateway writing served counts to this Redis)"
    share = p.legacy_requests / p.total_requests
    head = (
        f"legacy served {p.legacy_requests:,} of {p.total_requests:,} requests ({share:.1%}) in the last "
        f"{window}, fallbacks and the default route included"
    )
    if not p.legacy_by_route:
        return head + ": legacy can be stopped"
    top = ", ".join(f"{name} {n:,}" for name, n in p.legacy_by_route[:8])
    more = f", {len(p.legacy_by_route) - 8} more" if len(p.legacy_by_route) > 8 else ""
    return f"{head}: {top}{more}"


def transition_line(t: Transition, now: float) -> str:
    """``21:20:03 (4 min ago) posts.list promote 10% -> 50% by cli:ann: gate held``."""
    ago = age(max(0.0, now - t.at))
    return f"{clock(t.at)} ({ago} ago) {t.route} {t.action} {t.from_pct}% -> {t.to_pct}% by {t.who}: {t.why}"


def _row(r: RouteProgress) -> tuple[str, ...]:
    mark = "!! " if r.rollback else ""
    return (
        f"{mark}{r.name}", r.label, _pct(r.new_share), _pct(r.match_rate), r.verdict or "-", r.next,
    )  # fmt: skip


def progress_terminal(p: Progress) -> str:
    """The overview block that opens the terminal report (a blank line after it)."""
    out = [
        f"MIGRATION PROGRESS (generated at {clock(p.generated_at, True)}, window {window_text(p.window_s)})",
        stage_line(p),
        legacy_line(p),
    ]
    flagged = [r.name for r in p.routes if r.rollback]
    if flagged:
        out.append(f"ROLL BACK suggested: {', '.join(flagged)} (marked !! below)")
    head = ("ROUTE", "STAGE", "NEW %", "MATCH", "VERDICT", "NEXT ACTION")
    rows = [head, *(_row(r) for r in p.routes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    out.append("")
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    for r in p.routes:
        shown = [b for b in r.blocks if b not in r.next]
        if shown:
            out += [f"  {r.name} blocks: {b}" for b in shown]
    if p.transitions:
        out += ["", "recent transitions (newest first):"]
        out += [f"  {transition_line(t, p.generated_at)}" for t in p.transitions]
    return "\n".join(out) + "\n\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def progress_markdown(p: Progress) -> str:
    """The overview as Markdown (a heading, the summary, a table, the transitions)."""
    out = [
        "## Migration progress",
        "",
        f"Generated at {clock(p.generated_at, True)}; window {window_text(p.window_s)}.",
        "",
        f"- {stage_line(p)}",
        f"- {legacy_line(p)}",
        "",
        "| route | stage | served by new | match | verdict | next action | blocks |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in p.routes:
        name = f"**{r.name}** (roll back)" if r.rollback else r.name
        blocks = "; ".join(b for b in r.blocks if b not in r.next) or "-"
        out.append(
            f"| {_md(name)} | {r.label} | {_pct(r.new_share)} | {_pct(r.match_rate)} | {r.verdict or '-'} | "
            f"{_md(r.next)} | {_md(blocks)} |"
        )
    if p.transitions:
        out += ["", "Recent transitions (newest first):", ""]
        out += [f"- {transition_line(t, p.generated_at)}" for t in p.transitions]
    return "\n".join(out) + "\n\n"
