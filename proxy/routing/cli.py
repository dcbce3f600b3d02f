"""``strangler routes check FILE`` and ``strangler routes discover``.

``check``: exit status 0 with the table in match-priority order (the order ``RouteTable.match`` tries
routes), or 1 with every error as ``FILE:LINE: KEY: MESSAGE``, one per line, so editors can jump to them.

``discover``: a routes.yaml draft from an Express app (``--express``) and/or access logs
(``--access-log``), written to ``--out`` or standard output; what cannot be expressed, traffic per
endpoint and traffic no route covers go to standard error as well as into the draft's comments.
Exit status 0 with a draft, 1 when the app or a log cannot be read, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from proxy.routing.discover import DiscoverError, Endpoint, Skipped, discover_express
from proxy.routing.draft import Draft, add_traffic, build_draft, endpoints_from_traffic
from proxy.routing.model import AUTO
from proxy.routing.table import Route, RoutesError, RouteTable, load_routes
from proxy.routing.traffic import Traffic, read_traffic

__all__ = ["check", "discover", "format_table"]

_COLUMNS = ("#", "name", "methods", "path", "target", "shadow")


def _shadow(route: Route) -> str:
    spec = route.shadow
    if spec is None:
        return "-"
    what = "reads+writes" if spec.writes else "reads"
    return f"{spec.sample:.4g} of {what}, timeout {spec.timeout:g}s"


def format_table(table: RouteTable) -> str:
    """The resolved table as aligned text: upstreams, then routes in priority order, then the default."""
    rows = [
        (str(i + 1), r.name, ",".join(sorted(r.methods)) if r.methods else "*", r.path, r.target, _shadow(r))
        for i, r in enumerate(table.routes)
    ]
    d = table.default
    rows.append(("-", d.name, "*", d.path, d.target, "-"))
    widths = [max(len(row[c]) for row in [*rows, _COLUMNS]) for c in range(len(_COLUMNS))]
    lines = [f"{table.source}: ok, {len(table.routes)} routes (+ default), sha256 {table.sha256[:12]}"]
    for spec in table.upstreams.values():
        lines.append(
            f"upstream {spec.name}: {spec.url} (connect {spec.connect_timeout:g}s, "
            f"timeout {spec.total_timeout:g}s, pool {spec.pool_size})"
        )
    lines.append("")
    for row in [_COLUMNS, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    plans = [_rollout(r) for r in table.routes if r.rollout is not None]
    if plans:
        lines += ["", *plans]
    return "\n".join(lines) + "\n"


def _rollout(route: Route) -> str:
    """One line per route with a plan: the plan, or why it is inactive (a hand-set target overrides it)."""
    plan = route.rollout
    assert plan is not None
    sticky = plan.sticky.kind + (f":{plan.sticky.name}" if plan.sticky.name else "")
    what = f"stages {'/'.join(str(s) for s in plan.stages)}%, sticky {sticky}"
    if plan.testers is not None:
        what += f", testers {plan.testers[0]}: {plan.testers[1]}"
    if route.target != AUTO:
        return f"rollout {route.name}: inactive (target: {route.target} set by hand overrides it); {what}"
    return f"rollout {route.name}: {what}; the stage is the controller's (proxy.rollout)"


def check(path: str, out: TextIO = sys.stdout) -> int:
    """Lint ``path``: print the resolved table and return 0, or print every error and return 1."""
    try:
        table = load_routes(path)
    except RoutesError as exc:
        for error in exc.errors:
            out.write(f"{error}\n")
        count = len(exc.errors)
        out.write(f"{path}: {count} error{'s' if count != 1 else ''}; the file was not loaded\n")
        return 1
    out.write(format_table(table))
    return 0


def discover(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``strangler routes discover``: build, check and write the draft; see the module docstring."""
    if not args.express and not args.access_log:
        err.write("strangler routes discover: give --express APP_JS, --access-log FILE, or both\n")
        return 2
    endpoints: list[Endpoint] = []
    skipped: list[Skipped] = []
    header = ["A routes.yaml draft written by `strangler routes discover`: every route goes to legacy."]
    try:
        if args.express:
            app = discover_express(args.express, timeout=args.timeout, node=args.node)
            endpoints += app.endpoints
            skipped += app.skipped
            header.append(
                f"From the Express {app.version} app {args.express}: {len(app.endpoints)} endpoints."
            )
            for warning in app.warnings:
                err.write(f"warning: {warning}\n")
        traffic = Traffic()
        for log in args.access_log:
            with Path(log).open(encoding="utf-8", errors="replace") as lines:
                read_traffic(lines, traffic)
    except DiscoverError as exc:
        err.write(f"strangler routes discover: {exc}\n")
        return 1
    except OSError as exc:
        err.write(f"strangler routes discover: cannot read {exc.filename}: {exc.strerror}\n")
        return 1
    if args.access_log:
        header.append(
            f"Traffic from {', '.join(args.access_log)}: {traffic.requests} requests"
            f" ({traffic.skipped} lines skipped: not requests, or paths the gateway refuses)."
        )
        if not args.express:
            endpoints, skipped = endpoints_from_traffic(traffic, args.max_literals)
    header.append("Review it, run `strangler routes check` on it, then flip routes to new one at a time.")
    draft = build_draft(endpoints, skipped)
    draft.header, draft.legacy_url, draft.new_url = header, args.legacy_url, args.new_url
    if args.access_log:
        add_traffic(draft, traffic, args.max_literals)
    text = draft.render()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    _summary(draft, args.out, err)
    return 0


def _summary(draft: Draft, path: str | None, err: TextIO) -> None:
    where = f"wrote {path}" if path else "draft written to standard output"
    err.write(f"{where}: {len(draft.routes)} routes, all on legacy\n")
    if draft.traffic_seen:
        err.write("traffic per route:\n")
        for route in sorted(draft.routes, key=lambda r: -sum(r.traffic.values())):
            err.write(f"  {sum(route.traffic.values()):>8}  {route.name}\n")
    for skip in draft.skipped:
        where = f" ({skip.source})" if skip.source else ""
        err.write(f"not expressible: {skip.express}{where}: {skip.reason}\n")
    for template, counts in draft.uncovered.items():
        total = sum(counts.values())
        err.write(f"not covered by any route: {template}: {total} request{'s' if total != 1 else ''}\n")
