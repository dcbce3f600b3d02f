"""``strangler report``: read the stores, print the report in a format, suggest the routes to flip, or
start a route's new epoch by hand (``--reset ROUTE``)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import re
import sys
from pathlib import Path
from typing import TextIO

import orjson

from proxy.report.html import render_html
from proxy.report.model import READY, Report, gather
from proxy.report.progress import Progress, Transition, parse_window
from proxy.report.progress_io import read_journey, read_progress
from proxy.report.progress_text import progress_markdown, progress_terminal, transition_line
from proxy.report.text import render_markdown, render_terminal
from proxy.routing.table import RoutesError, RouteTable, load_routes
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import DEFAULT_PREFIX, StoreError

__all__ = ["main", "render", "suggest"]

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


def render(report: Report, fmt: str, progress: Progress | None = None) -> str:
    """Render in ``fmt``: terminal, json, markdown or html; opening with the migration ``progress``
    overview when given (in JSON: its ``progress`` key)."""
    if fmt == "json":
        doc = report.as_json()
        if progress is not None:
            doc = {"progress": progress.as_json(), **doc}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "markdown":
        return (progress_markdown(progress) if progress else "") + render_markdown(report)
    if fmt == "html":
        return render_html(report, progress=progress)
    return (progress_terminal(progress) if progress else "") + render_terminal(report)


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
    p.add_argument("--epoch", choices=("current", "all"), default="current",
                   help="current: each route's current epoch (default); all: also every kept epoch's totals")
    p.add_argument("--window", default="1h",
                   help="the progress overview's window: legacy's remaining traffic and the charts over the "
                        "last 30m, 1h (default), 1d...")
    p.add_argument("--reset", metavar="ROUTE",
                   help="start a new epoch of ROUTE by hand (its counts start again; earlier epochs are kept "
                        "as history), for every gateway replica sharing this Redis")
    return p


async def _collect(
    args: argparse.Namespace, table: RouteTable | None, steps: _Progress, window_s: float | None,
    journey: list[Transition],
) -> tuple[Report, Progress | None]:
    """The report, and (with ``window_s``) the progress overview over that window; with ``--route``, that
    route's transitions into ``journey``."""
    steps.step("connecting to Redis and PostgreSQL")
    store = await RedisPgStore.connect(args.redis_url, args.database_url, args.prefix)
    try:
        steps.step("reading counters and samples")
        report = await gather(store, table, args.route, history=args.epoch == "all")
        if window_s is None:
            if args.route:  # one route: its journey instead of the overview
                journey[:] = await read_journey(store.redis, args.prefix, args.route)
            return report, None
        steps.step("reading the rollout state and served traffic")
        return report, await read_progress(store.redis, args.prefix, table, report, window_s)
    finally:
        await store.aclose()
        steps.done()


async def _reset_epoch(args: argparse.Namespace) -> str | None:
    store = await RedisPgStore.connect(args.redis_url, None, args.prefix)
    try:
        epoch = await store.reset(args.reset)
    finally:
        await store.aclose()
    return epoch.id if epoch is not None else None


def _reset(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        epoch = asyncio.run(_reset_epoch(args))
    except (OSError, ConnectionError) as exc:
        err.write(f"strangler report: cannot reach Redis: {exc}; check the Redis URL\n")
        return 2
    except Exception as exc:  # redis errors have no common base with OSError; say what failed and exit 2
        err.write(f"strangler report: the reset failed: {type(exc).__name__}: {exc}\n")
        return 2
    if epoch is None:
        err.write(f"strangler report: route {args.reset!r} has nothing recorded yet; nothing to reset.\n")
        return 2
    out.write(
        f"route {args.reset}: new epoch {epoch} started (reset by hand); gateways count into it within a "
        "second, and earlier epochs stay as history (--epoch all)\n"
    )
    return 0


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
    if args.reset:
        return _reset(args, out, err)
    try:
        window_s = parse_window(args.window)
    except ValueError as exc:
        err.write(f"strangler report: --window: {exc}\n")
        return 2
    table: RouteTable | None = None
    try:
        table = load_routes(args.routes)
    except RoutesError as exc:
        if args.suggest or Path(args.routes).exists():
            err.write(f"strangler report: cannot load {args.routes}:\n{exc}\nFix the file and run again.\n")
            return 2
    try:
        # The overview is of the whole migration: not with one route's page or a suggested diff.
        overview = None if args.route or args.suggest else window_s
        journey: list[Transition] = []
        report, overview_doc = asyncio.run(_collect(args, table, _Progress(err), overview, journey))
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
    out.write(render(report, args.format, overview_doc))
    if args.route and journey and args.format in ("terminal", "markdown"):
        out.write(f"\njourney of {args.route} (the autopilot's transitions, oldest first):\n")
        out.writelines(f"  {transition_line(t, report.generated_at)}\n" for t in journey)
    return 0
