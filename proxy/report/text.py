"""The report as text: a terminal table, Markdown, JSON, and the dispatcher over every format."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.report.model import NOT_ENOUGH, NOT_READY, UNAVAILABLE, Report, RouteReport

__all__ = [
    "answered", "epoch_line", "fallback_line", "history_lines", "method_lines", "render_markdown",
    "render_terminal",
]  # fmt: skip


# Counted by proxy.shadow.admission for exchanges it could not compare.
_EXTRA = ("dropped", "skipped", "unavailable_stream", "unavailable_websocket", "unavailable_write",
          "unavailable_secret", "learning")  # fmt: skip


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def answered(status: int | None, ms: float | None) -> str:
    """One side of an example: ``200 in 1.2 ms``; a latency is missing when it was not measured
    (a shadow call pipelined behind others) or the side failed."""
    if status is None:
        return "no answer"
    if ms is None:
        return f"{status} (not timed)"
    return f"{status} in {ms:g} ms"


def _request_id(ex: dict[str, Any], form: str) -> str:
    """``form`` with an example's request id (its primary request's X-Request-Id), or "" when it has none
    (stored before samples kept it)."""
    rid = ex.get("request_id") or ""
    return form.format(rid) if rid else ""


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "age unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _since(epoch: dict[str, Any]) -> str:
    reason = str(epoch.get("reason") or "")
    if reason == "reset by hand":
        return "the reset by hand"
    if reason.startswith("routes.yaml changed: "):
        return f"routes.yaml changed ({reason.removeprefix('routes.yaml changed: ')})"
    return reason or "first recorded"


def epoch_line(r: RouteReport) -> str:
    """``epoch 3f2a…: since the flip (legacy -> new), 14 min, 3,200 compared`` (empty without an epoch)."""
    if r.epoch is None:
        return ""
    age = _age(r.epoch.get("age_s"))
    return f"epoch {r.epoch['id']}: since {_since(r.epoch)}, {age}, {r.compared:,} compared"


def fallback_line(r: RouteReport) -> str:
    """``served by legacy in new's place: connect 12, circuit 40 (the circuit breaker was open)``, and the
    shadow calls whose side refused the connection (``unreached_<side>``: down, not counted as errors), or
    ""."""
    parts = []
    if r.fallbacks:
        counts = ", ".join(f"{reason} {n:,}" for reason, n in r.fallbacks.items())
        opened = " (the circuit breaker was open)" if "circuit" in r.fallbacks else ""
        parts.append(f"served by legacy in new's place: {counts}{opened}")
    down = [(side, r.counters.get(f"unreached_{key}", 0)) for side, key in (("new", "candidate"),
                                                                              ("legacy", "control"))]
    down = [(side, n) for side, n in down if n]
    if down:
        parts.append("shadow calls refused (side down, not counted as errors): "
                     + ", ".join(f"{side} {n:,}" for side, n in down))  # fmt: skip
    return "; ".join(parts)


def method_lines(r: RouteReport) -> list[str]:
    """One line per method of a route serving several: ``GET 1,200 compared, 99.9% match: READY``."""
    if len(r.methods) < 2:
        return []
    return [
        f"{m.method}: {m.seen:,} seen, {m.compared:,} compared, {_fmt_rate(m.match_rate)} match"
        + (f": {m.verdict}" if m.verdict else " (not compared)")
        + (f" ({'; '.join(m.reasons)})" if m.reasons and m.verdict != "READY" else "")
        for m in r.methods
    ]


def history_lines(r: RouteReport) -> list[str]:
    """One line per kept epoch, oldest first (``--epoch all``)."""
    out = []
    for e in r.history:
        rate = 1 - e["differed"] / e["compared"] if e["compared"] else None
        mark = " (current)" if r.epoch is not None and e["id"] == r.epoch["id"] else ""
        out.append(
            f"epoch {e['id']}{mark}: {_since(e)}, started {_age(e.get('age_s'))} ago, {e['compared']:,} "
            f"compared, {_fmt_rate(rate)} match"
        )
    return out


def render_terminal(report: Report) -> str:
    """A fixed-width table, then each route's paths, noise and reasons."""
    head = (
        "ROUTE", "TARGET", "SEEN", "COMPARED", "MATCH", "LEGACY p50/p99", "NEW p50/p99", "ERR L/N", "VERDICT"
    )  # fmt: skip
    rows = [head]
    for r in report.routes:
        lat = r.latency_ms
        rows.append((
            r.name, r.target or "-", str(r.counters.get("seen", 0)), str(r.compared), _fmt_rate(r.match_rate),
            f"{_fmt_ms(lat['legacy']['p50'])}/{_fmt_ms(lat['legacy']['p99'])} ms",
            f"{_fmt_ms(lat['new']['p50'])}/{_fmt_ms(lat['new']['p99'])} ms",
            f"{_fmt_rate(r.error_rate['legacy'])}/{_fmt_rate(r.error_rate['new'])}", r.verdict,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not report.routes:
        out.append("(no shadowed routes and no recorded comparisons)")
    for r in report.routes:
        details = [f"  {line}" for line in [epoch_line(r), *method_lines(r), fallback_line(r)] if line]
        details += [f"  history: {line}" for line in history_lines(r)]
        details += [f"  differs at {p}: {n}" for p, n in r.paths[:10]]
        details += [
            f"  noise {n['method']} {n['path']}: A/A {n['aa_rate']:.1%} of {n['aa_pairs']}, "
            f"new {n['candidate_rate']:.1%} of {n['compared']}"
            for n in r.noise_rates[:10]
        ]
        details += [
            f"  generated {g['method']} {g['path']}: same shape, other value in {g['rate']:.1%} of "
            f"{g['compared']} ({'learned' if g['learned'] else 'compare.generated'})"
            for g in r.generated[:10]
        ]
        if r.raced:
            details.append(f"  {r.raced} reads changed during the comparison (raced: not counted against it)")
        if r.noise:
            details.append(f"  {r.noise} comparisons differed only in noise (counted as matches)")
        details += [f"  why: {why}" for why in r.reasons if r.verdict in (NOT_READY, UNAVAILABLE, NOT_ENOUGH)]
        wait = r.write_wait_ms
        if wait is not None:
            details.append(f"  writes waited for dry run: p50 {_fmt_ms(wait['p50'])} ms, "
                           f"p99 {_fmt_ms(wait['p99'])} ms ({wait['count']:.0f} writes)")  # fmt: skip
        why_not = ", ".join(f"{k[13:]} {v}" for k, v in sorted(r.counters.items())
                            if k.startswith("not_compared_") and v)  # fmt: skip
        if why_not:
            details.append(f"  writes not compared: {r.counters.get('not_compared', 0)} ({why_not})")
        extra = {k: v for k, v in r.counters.items() if k in _EXTRA and v}
        if extra:
            details.append("  " + ", ".join(f"{k} {v}" for k, v in extra.items()))
        if details:
            out += ["", f"{r.name}:", *details]
        for ex in r.examples:
            out += ["", *_side_by_side(ex)]
    return "\n".join(out) + "\n"


def _side_by_side(ex: dict[str, Any], width: int = 38) -> list[str]:
    def cell(value: Any) -> str:
        text = orjson.dumps(value).decode()  # JSON, so "1" and 1 look different
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = [
        f"  example: {ex['method']} {ex['path']}  (legacy "
        f"{answered(ex['control_status'], ex['control_ms'])}, new "
        f"{answered(ex['candidate_status'], ex['candidate_ms'])}){_request_id(ex, '  request id {}')}",
        f"    {'PATH':<30} {'KIND':<8} {'LEGACY':<{width}} NEW",
    ]
    for d in ex["diff"]:
        control, candidate = cell(d["control"]), cell(d["candidate"])
        lines.append(f"    {d['path']:<30} {d['kind']:<8} {control:<{width}} {candidate}")
    return lines


def render_markdown(report: Report) -> str:
    """A GitHub-flavoured Markdown table plus each route's differing paths."""
    out = [
        "| route | target | seen | compared | match | legacy p50/p99 ms | new p50/p99 ms | errors legacy/new "
        "| verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.routes:
        lat = r.latency_ms
        out.append(
            f"| {r.name} | {r.target or '-'} | {r.counters.get('seen', 0)} | {r.compared} | "
            f"{_fmt_rate(r.match_rate)} | {_fmt_ms(lat['legacy']['p50'])}/{_fmt_ms(lat['legacy']['p99'])} | "
            f"{_fmt_ms(lat['new']['p50'])}/{_fmt_ms(lat['new']['p99'])} | "
            f"{_fmt_rate(r.error_rate['legacy'])}/{_fmt_rate(r.error_rate['new'])} | **{r.verdict}** |"
        )
    for r in report.routes:
        if r.paths or r.noise_paths or r.generated or r.raced or r.reasons or r.epoch or r.methods or (
            fallback_line(r)
        ):
            out += ["", f"### {r.name}", ""]
            out += [f"- {line}" for line in [epoch_line(r), *method_lines(r), fallback_line(r)] if line]
            out += [f"- history: {line}" for line in history_lines(r)]
            out += [f"- differs at `{p}`: {n}" for p, n in r.paths]
            out += [
                f"- noise {n['method']} `{n['path']}`: A/A {n['aa_rate']:.1%} of {n['aa_pairs']}, "
                f"new {n['candidate_rate']:.1%} of {n['compared']}"
                for n in r.noise_rates
            ]
            out += [f"- generated {g['method']} `{g['path']}`: {g['rate']:.1%}" for g in r.generated]
            if r.raced:
                out.append(f"- raced (data changed during the comparison): {r.raced}")
            out += [f"- {why}" for why in r.reasons]
        for ex in r.examples:
            out += ["", f"`{ex['method']} {ex['path']}`{_request_id(ex, ' (request id `{}`)')}", ""]
            out += ["| path | kind | legacy | new |", "|---|---|---|---|"]
            for d in ex["diff"]:
                c, n = orjson.dumps(d["control"]).decode(), orjson.dumps(d["candidate"]).decode()
                out.append(f"| `{d['path']}` | {d['kind']} | `{c}` | `{n}` |")
    return "\n".join(out) + "\n"
