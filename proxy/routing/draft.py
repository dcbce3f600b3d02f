"""A routes.yaml draft: every discovered endpoint a route on legacy, with comments saying where it came from.

Endpoints with the same template shape become one route when any of them takes every method (``all``,
mounted middleware), else one route per method, so each can be flipped to ``new`` on its own (``HEAD``
goes with ``GET``, as routes.yaml adds it anyway). The text is then loaded with ``parse_routes``, so the
draft is exactly what ``strangler routes check`` accepts: a route the checker finds unreachable is moved
to the "not expressible" list with its reason. Traffic counts, when given, come from matching every
request seen against the draft's own table: what the draft covers is what the gateway would route.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.routing.discover import Endpoint, Skipped
from proxy.routing.model import RoutesError
from proxy.routing.table import RouteTable, parse_routes
from proxy.routing.template import TemplateError, parse_template
from proxy.routing.traffic import Traffic, infer_templates

__all__ = ["Draft", "DraftRoute", "add_traffic", "build_draft", "endpoints_from_traffic"]

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass
class DraftRoute:
    """One route of the draft; ``traffic`` is requests per method once traffic has been matched."""

    name: str
    template: str
    methods: frozenset[str] | None
    origins: list[Endpoint]
    traffic: Counter[str] = field(default_factory=Counter)


@dataclass
class Draft:
    """The routes, what could not be expressed, and (with traffic) what no route covers."""

    routes: list[DraftRoute]
    skipped: list[Skipped]
    uncovered: dict[str, Counter[str]] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    legacy_url: str = "http://127.0.0.1:3000"
    new_url: str = "http://127.0.0.1:8000"
    traffic_seen: bool = False

    def table(self, filename: str = "routes.draft.yaml") -> RouteTable:
        """The draft loaded as the gateway would load it."""
        return parse_routes(self.render(), filename)

    def render(self) -> str:
        """The draft as routes.yaml text."""
        lines = [f"# {_clean(line)}" for line in self.header]
        lines += [
            "upstreams:",
            f"  legacy: {{url: {json.dumps(self.legacy_url)}}}",
            f"  new: {{url: {json.dumps(self.new_url)}}}",
            "default: legacy",
            "routes:" if self.routes else "routes: []",
        ]
        for route in self.routes:
            lines += [f"  # {_clean(line)}" for line in _describe(route, self.traffic_seen)]
            methods = f"methods: [{', '.join(_ordered(route.methods))}], " if route.methods else ""
            lines += [
                f"  - name: {route.name}",
                f"    match: {{{methods}path: {json.dumps(route.template)}}}",
                "    target: legacy",
            ]
        if self.skipped:
            lines += [
                "",
                "# Not expressible in routes.yaml (the default route sends these to legacy anyway):",
            ]
            for skip in self.skipped:
                where = f" ({skip.source})" if skip.source else ""
                lines.append(
                    f"#   {_clean(_methods_text(skip.methods))} {_clean(skip.express)}{where}: "
                    f"{_clean(skip.reason)}"
                )
        if self.uncovered:
            lines += ["", "# Traffic no route covers (it goes to the default route, legacy):"]
            for template, counts in self.uncovered.items():
                lines.append(f"#   {_clean(template)}: {_counts(counts)}")
        return "\n".join(lines) + "\n"


def _clean(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text)


def _ordered(methods: Iterable[str] | None) -> list[str]:
    if methods is None:
        return []
    return sorted(methods, key=lambda m: (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else 99, m))


def _methods_text(methods: frozenset[str] | None) -> str:
    return ",".join(_ordered(methods)) if methods else "ALL"


def _counts(counts: Counter[str]) -> str:
    total = sum(counts.values())
    per = ", ".join(f"{m} {counts[m]}" for m in _ordered(counts))
    return f"{total} request{'s' if total != 1 else ''} ({per})"


def _describe(route: DraftRoute, traffic_seen: bool) -> list[str]:
    out = []
    for origin in route.origins:
        where = f" ({origin.source})" if origin.source else ""
        # A route split per method names its own method, not every method the Express route took.
        methods = origin.methods if route.methods is None else route.methods
        out.append(f"{_methods_text(methods)} {origin.express}{where}")
        out += [f"  note: {note}" for note in origin.notes]
    if traffic_seen:
        out.append(f"traffic: {_counts(route.traffic)}" if route.traffic else "traffic: none seen")
    return list(dict.fromkeys(out))


def endpoints_from_traffic(traffic: Traffic, max_literals: int = 20) -> tuple[list[Endpoint], list[Skipped]]:
    """Inferred templates as endpoints (one per method seen), and inferred paths templates cannot hold."""
    endpoints, skipped = [], []
    for template, counts in infer_templates(traffic, max_literals).items():
        try:
            parse_template(template)
        except TemplateError as exc:
            skipped.append(Skipped(template, frozenset(counts), "access log", str(exc)))
            continue
        endpoints.append(Endpoint(template, frozenset(counts), template, f"access log: {_counts(counts)}"))
    return endpoints, skipped


def build_draft(endpoints: Iterable[Endpoint], skipped: Iterable[Skipped] = ()) -> Draft:
    """Group endpoints into routes (see the module docstring) and drop what the checker refuses."""
    shapes: dict[tuple[object, ...], list[Endpoint]] = {}
    for endpoint in endpoints:
        shapes.setdefault(parse_template(endpoint.template).shape, []).append(endpoint)
    routes: list[DraftRoute] = []
    names: set[str] = set()
    for group in shapes.values():
        template = group[0].template
        if any(e.methods is None for e in group):
            routes.append(DraftRoute(_name(template, None, names), template, None, group))
            continue
        methods = {m for e in group for m in e.methods or ()}
        if "GET" in methods:
            methods.discard("HEAD")
        for method in _ordered(methods):
            mine = [
                e
                for e in group
                if e.methods and (method in e.methods or (method == "GET" and "HEAD" in e.methods))
            ]
            routes.append(DraftRoute(_name(template, method, names), template, frozenset({method}), mine))
    draft = Draft(routes, list(skipped))
    _drop_refused(draft)
    return draft


def _name(template: str, method: str | None, names: set[str]) -> str:
    words = [re.sub(r"[^A-Za-z0-9._-]+", "-", s.strip("{}*")).strip("-.") for s in template.split("/")]
    base = "-".join(w for w in [method.lower() if method else "", *words] if w) or "root"
    name, n = base, 2
    while name in names:
        name, n = f"{base}-{n}", n + 1
    names.add(name)
    return name


def _drop_refused(draft: Draft) -> None:
    """Move routes the loader refuses (unreachable behind more specific ones) to ``skipped``."""
    for _ in range(len(draft.routes) + 1):
        try:
            draft.table()
            return
        except RoutesError as exc:
            refused = {
                int(m.group(1)) for e in exc.errors if (m := re.fullmatch(r"routes\[(\d+)\].*", e.key))
            }
            if not refused:
                raise
            for index in sorted(refused, reverse=True):
                route = draft.routes.pop(index)
                reason = next(e.message for e in exc.errors if e.key.startswith(f"routes[{index}]"))
                draft.skipped.append(Skipped(route.template, route.methods, None, reason))


def add_traffic(draft: Draft, traffic: Traffic, max_literals: int = 20) -> None:
    """Count each request against the route the draft's table gives it; the rest is ``uncovered``."""
    table = draft.table()
    by_name = {route.name: route for route in draft.routes}
    uncovered = Traffic()
    for (method, path), count in traffic.counts.items():
        route = table.match(method, path).route
        if route is table.default:
            uncovered.counts[(method, path)] += count
        else:
            by_name[route.name].traffic[method] += count
    draft.uncovered = infer_templates(uncovered, max_literals)
    draft.traffic_seen = True
