"""``strangler routes check FILE``: lint a routes file and print the resolved table.

Exit status 0 with the table in match-priority order (the order ``RouteTable.match`` tries routes),
or 1 with every error as ``FILE:LINE: KEY: MESSAGE``, one per line, so editors can jump to them.
"""

from __future__ import annotations

import sys
from typing import TextIO

from proxy.routing.table import Route, RoutesError, RouteTable, load_routes

__all__ = ["check", "format_table"]

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
    return "\n".join(lines) + "\n"


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
