"""The shadow-comparison report: a model built from the stores, renderers, and ``strangler report``.

Per route: requests seen, compared, match rate, the differing paths with counts (noise apart), latency
p50/p99 of legacy (control) and new (candidate), error rates, and a verdict: READY (enough comparisons,
match rate at the threshold, new p99 no slower than legacy's within a tolerance (the median when a side
has fewer than 100 timings, where "p99" would be a single outlier), no more errors), NOT
READY (with the reasons) or NOT ENOUGH DATA. Noise is applied when the report is built, so a difference
recorded before its path was learned as noise is still counted as noise.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from proxy.diffstore import DEFAULT_PREFIX, DiffStore, RouteStats, Sample, StoreError
from proxy.routes import RoutesError, RouteTable, ShadowSettings, load_routes

__all__ = ["Report", "RouteReport", "build_report", "gather", "main", "render", "suggest"]

READY: Final = "READY"
NOT_READY: Final = "NOT READY"
NOT_ENOUGH: Final = "NOT ENOUGH DATA"
# New may be this much slower at p99 (ratio, plus an absolute slack for the 15 % histogram buckets).
P99_RATIO: Final = 1.25
P99_SLACK_S: Final = 0.005
P99_MIN_SAMPLES: Final = 100


@dataclass
class RouteReport:
    """One route's line in the report (latencies in milliseconds)."""

    name: str
    target: str | None
    shadowed: bool
    counters: dict[str, int]
    compared: int
    differed: int
    noise: int
    match_rate: float | None
    paths: list[tuple[str, int]]
    noise_paths: list[tuple[str, int]]
    latency_ms: dict[str, dict[str, float | None]]
    error_rate: dict[str, float | None]
    verdict: str
    reasons: list[str]
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    """The whole report: settings used for verdicts and one RouteReport per route."""

    generated_at: float
    source: str | None
    min_compared: int
    match_threshold: float
    routes: list[RouteReport]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``/report.json`` and ``--format json`` document)."""
        return asdict(self)

    def route(self, name: str) -> RouteReport | None:
        """The named route's report, if any."""
        return next((r for r in self.routes if r.name == name), None)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _route_report(
    name: str, st: RouteStats, table: RouteTable | None, settings: ShadowSettings
) -> RouteReport:
    declared = {r.name: r for r in table.routes} if table else {}
    route = declared.get(name)
    noise_set = set(st.noise)
    compared = st.get("compared")
    # Reclassify with the noise known now: a signature is real if any of its paths is not noise.
    differed = sum(n for sig, n in st.signatures.items() if any(p not in noise_set for p in sig.split(" ")))
    differed = min(differed, compared)
    matched_or_noise = compared - differed
    noise = max(0, matched_or_noise - st.get("matched"))
    rate = matched_or_noise / compared if compared else None
    paths = sorted(((p, n) for p, n in st.paths.items() if p not in noise_set), key=lambda x: (-x[1], x[0]))
    noise_paths = sorted(st.noise.items(), key=lambda x: (-x[1], x[0]))
    latency = {
        label: {"p50": _ms(st.percentile(side, 0.5)), "p99": _ms(st.percentile(side, 0.99))}
        for label, side in (("legacy", "control"), ("new", "candidate"))
    }
    attempts = compared + st.get("errors_control") + st.get("errors_candidate")
    errors = {
        "legacy": st.get("errors_control") / attempts if attempts else None,
        "new": st.get("errors_candidate") / attempts if attempts else None,
    }
    verdict, reasons = _verdict(compared, rate, latency, st, settings)
    return RouteReport(
        name=name,
        target=route.target if route else None,
        shadowed=bool(route and route.shadow),
        counters={k: st.get(k) for k in sorted(set(st.counters) | _SHOWN)},
        compared=compared,
        differed=differed,
        noise=noise,
        match_rate=rate,
        paths=paths,
        noise_paths=noise_paths,
        latency_ms=latency,
        error_rate=errors,
        verdict=verdict,
        reasons=reasons,
    )


_SHOWN: Final = frozenset({"seen", "sampled", "compared", "dropped", "skipped"})


def _verdict(
    compared: int,
    rate: float | None,
    latency: dict[str, dict[str, float | None]],
    st: RouteStats,
    settings: ShadowSettings,
) -> tuple[str, list[str]]:
    if compared < settings.min_compared or rate is None:
        return NOT_ENOUGH, [f"{compared} of the {settings.min_compared} comparisons needed (min_compared)"]
    reasons = []
    if rate < settings.match_threshold:
        reasons.append(f"match rate {rate:.1%} is below {settings.match_threshold:.1%} (match_threshold)")
    # Below P99_MIN_SAMPLES a "p99" is just the slowest call, one outlier: compare medians instead.
    samples = min(sum(st.latency.get(side, {}).values()) for side in ("control", "candidate"))
    q = "p99" if samples >= P99_MIN_SAMPLES else "p50"
    legacy_q, new_q = latency["legacy"][q], latency["new"][q]
    if legacy_q is not None and new_q is not None and new_q > legacy_q * P99_RATIO + P99_SLACK_S * 1000:
        reasons.append(f"new {q} {new_q:g} ms is slower than legacy {q} {legacy_q:g} ms")
    if st.get("errors_candidate") > st.get("errors_control"):
        reasons.append(
            f"new failed {st.get('errors_candidate')} times, legacy {st.get('errors_control')} times"
        )
    return (NOT_READY, reasons) if reasons else (READY, [])


def build_report(
    stats: dict[str, RouteStats],
    table: RouteTable | None,
    samples: dict[str, list[Sample]] | None = None,
    now: float | None = None,
) -> Report:
    """The report for every shadowed route in ``table`` and every route with recorded data."""
    settings = table.shadow_settings if table else ShadowSettings()
    # File order (routes are stored in match-priority order), then routes known only from the data.
    names = [r.name for r in sorted(table.routes, key=lambda r: r.line) if r.shadow] if table else []
    names += sorted(n for n in stats if n not in names)
    routes = []
    for name in names:
        rr = _route_report(name, stats.get(name) or RouteStats(name), table, settings)
        for s in (samples or {}).get(name, []):
            rr.examples.append(asdict(s))
        routes.append(rr)
    return Report(
        generated_at=time.time() if now is None else now,
        source=table.source if table else None,
        min_compared=settings.min_compared,
        match_threshold=settings.match_threshold,
        routes=routes,
    )


async def gather(
    store: DiffStore, table: RouteTable | None, route: str | None = None, examples: int = 5
) -> Report:
    """Read the store and build the report (with example diffs for ``route``, or for all if "*")."""
    stats = await store.stats()
    wanted = list(stats) if route == "*" else [route] if route else []
    samples = {name: await store.samples(name, examples) for name in wanted}
    return build_report(stats, table, samples)


_TARGET = re.compile(r"(\btarget:\s*)legacy\b")
_WRITES = re.compile(r"(\bwrites:\s*)true\b")


def suggest(text: str, table: RouteTable, report: Report) -> tuple[str, list[str]]:
    """The routes text with every READY route on legacy flipped to new, and the names flipped.

    A flipped route that shadowed writes gets ``writes: false``: after the flip the copy would go
    to legacy, which has no dry run.
    """
    lines = text.splitlines(keepends=True)
    starts = sorted(r.line for r in table.routes)
    flipped = []
    for rr in report.routes:
        route = next((r for r in table.routes if r.name == rr.name), None)
        if route is None or rr.verdict != READY or route.target != "legacy":
            continue
        later = [s for s in starts if s > route.line]
        end = later[0] - 1 if later else len(lines)
        for i in range(route.line - 1, end):
            lines[i] = _WRITES.sub(r"\1false", _TARGET.sub(r"\1new", lines[i]))
        flipped.append(route.name)
    return "".join(lines), flipped


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


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


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
        details = []
        details += [f"  differs at {p}: {n}" for p, n in r.paths[:10]]
        details += [f"  noise (A/A) {p}: {n}" for p, n in r.noise_paths[:10]]
        if r.noise:
            details.append(f"  {r.noise} comparisons differed only in noise (counted as matches)")
        details += [f"  why: {why}" for why in r.reasons if r.verdict == NOT_READY]
        extra = {k: v for k, v in r.counters.items() if k in ("dropped", "skipped") and v}
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
        f"{answered(ex['candidate_status'], ex['candidate_ms'])})",
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
        if r.paths or r.noise_paths or r.reasons:
            out += ["", f"### {r.name}", ""]
            out += [f"- differs at `{p}`: {n}" for p, n in r.paths]
            out += [f"- noise `{p}`: {n}" for p, n in r.noise_paths]
            out += [f"- {why}" for why in r.reasons]
        for ex in r.examples:
            out += ["", f"`{ex['method']} {ex['path']}`", ""]
            out += ["| path | kind | legacy | new |", "|---|---|---|---|"]
            for d in ex["diff"]:
                c, n = orjson.dumps(d["control"]).decode(), orjson.dumps(d["candidate"]).decode()
                out.append(f"| `{d['path']}` | {d['kind']} | `{c}` | `{n}` |")
    return "\n".join(out) + "\n"


def render(report: Report, fmt: str) -> str:
    """Render in ``fmt``: terminal, json, markdown or html."""
    if fmt == "json":
        return orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "html":
        from proxy.report_web import render_html  # the web module imports this one

        return render_html(report)
    return render_terminal(report)


class _Progress:
    """A one-line progress indicator on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def step(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\x1b[2K{text}…")
            self.stream.flush()

    def done(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strangler report", description="Print the shadow-comparison report.")
    p.add_argument("--routes", default="routes.yaml", help="routes file (default routes.yaml)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="Redis URL (env REDIS_URL)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                   help="PostgreSQL URL, for example diffs (env DATABASE_URL; optional)")
    p.add_argument("--prefix", default=os.environ.get("STRANGLER_SHADOW_PREFIX", DEFAULT_PREFIX),
                   help=f"Redis key prefix (env STRANGLER_SHADOW_PREFIX, default {DEFAULT_PREFIX})")
    p.add_argument("--format", choices=("terminal", "json", "markdown", "html"), default="terminal",
                   help="output format (default terminal)")
    p.add_argument("--route", help="only this route, with example diffs side by side")
    p.add_argument("--suggest", action="store_true",
                   help="print the routes.yaml change (unified diff) flipping every READY route to new")
    return p


async def _collect(args: argparse.Namespace, table: RouteTable | None, progress: _Progress) -> Report:
    from proxy.diffstore import RedisPgStore

    progress.step("connecting to Redis and PostgreSQL")
    store = await RedisPgStore.connect(args.redis_url, args.database_url, args.prefix)
    try:
        progress.step("reading counters and samples")
        return await gather(store, table, args.route)
    finally:
        await store.aclose()
        progress.done()


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``strangler report``: 0 on success, 2 when the routes file or the stores cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if not args.redis_url:
        err.write(
            "strangler report: no Redis URL (counters live in Redis); pass --redis-url or set REDIS_URL\n"
        )
        return 2
    table: RouteTable | None = None
    try:
        table = load_routes(args.routes)
    except RoutesError as exc:
        if args.suggest or Path(args.routes).exists():
            err.write(f"strangler report: cannot load {args.routes}:\n{exc}\nFix the file and run again.\n")
            return 2
    try:
        report = asyncio.run(_collect(args, table, _Progress(err)))
    except StoreError as exc:
        err.write(f"strangler report: {exc}\n")
        return 2
    except (OSError, ConnectionError) as exc:
        err.write(f"strangler report: cannot reach the shadow stores: {exc}; check the Redis/database URLs\n")
        return 2
    except Exception as exc:  # redis/asyncpg errors have no common base; say what failed and exit 2
        err.write(f"strangler report: reading the shadow stores failed: {type(exc).__name__}: {exc}\n")
        return 2
    if args.route:
        one = report.route(args.route)
        if one is None:
            err.write(f"strangler report: no route named {args.route!r} in {args.routes} or in the data.\n")
            return 2
        report.routes = [one]
    if args.suggest:
        assert table is not None
        text = Path(args.routes).read_text(encoding="utf-8")
        new_text, flipped = suggest(text, table, report)
        if not flipped:
            err.write("strangler report: no READY route is served by legacy; nothing to flip.\n")
            return 0
        out.writelines(difflib.unified_diff(
            text.splitlines(keepends=True), new_text.splitlines(keepends=True),
            fromfile=f"a/{args.routes}", tofile=f"b/{args.routes}",
        ))  # fmt: skip
        return 0
    out.write(render(report, args.format))
    return 0
