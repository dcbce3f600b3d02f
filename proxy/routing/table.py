"""routes.yaml: load, validate (every error with file, line and key), compile, match. No I/O but the read.

The file names two upstreams (``legacy``, ``new``), optional global ``shadow`` settings, a ``default``
upstream for everything unmatched and a list of routes (see the repository's routes.yaml and
``proxy/routing/routes.schema.json``). Loading reports every problem at once as ``RoutesError``; the table
that comes out is immutable and its ``match`` is the only thing the data path calls per request.

Matching (``RouteTable.match``) takes the canonical path from ``proxy.paths.canonicalise``: literal
segments compare case-insensitively, one trailing slash is ignored (both as Express does), the most
specific route wins (``proxy.routing.template``). ``Match.forward_path`` is what the gateway sends: the
template's literals, the params as given, no trailing slash; the default route forwards the path as is.
So ``/API/v1/users/1/`` and ``/api/v1/users/1`` reach the same backend with the same path.

Load-time cross checks: two routes that can match the same request with equal specificity are a tie,
and a route that never wins any request (every request it matches goes to a more specific route) is
unreachable; both are errors naming the routes and lines involved.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from proxy.routing.model import (
    CompareRules,
    ConfigError,
    Match,
    Route,
    RoutesError,
    ShadowSettings,
    ShadowSpec,
    UpstreamSpec,
)
from proxy.routing.resilience import resolve
from proxy.routing.template import CompiledRoutes, parse_template
from proxy.routing.validate import Document, read_document

__all__ = [
    "CompareRules",
    "ConfigError",
    "Match",
    "Route",
    "RouteTable",
    "RoutesError",
    "ShadowSettings",
    "ShadowSpec",
    "UpstreamSpec",
    "load_routes",
    "parse_routes",
]

_DEFAULT_TEMPLATE = parse_template("/{rest*}")
_ANY_METHOD = "\x00ANY"  # stands for "a method no route lists" in the unreachable check


@dataclass(frozen=True, eq=False)
class RouteTable:
    """A validated, compiled routes file; ``match`` never returns None (the default route catches all).

    ``routes`` are in match-priority order (most specific first), without the default route.
    """

    routes: tuple[Route, ...]
    upstreams: Mapping[str, UpstreamSpec]
    default: Route
    source: str
    sha256: str
    shadow_settings: ShadowSettings = field(default_factory=ShadowSettings)
    loaded_at: float = field(default_factory=time.time)
    _compiled: CompiledRoutes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        stale = self._compiled is not None and (
            self._compiled.ordered != tuple(self.routes) or self._compiled.default is not self.default
        )
        if self._compiled is None or stale:  # built by hand or by dataclasses.replace()
            templates = [(route, parse_template(route.path)) for route in self.routes]
            object.__setattr__(self, "_compiled", CompiledRoutes(templates, self.default))
        assert self._compiled is not None
        # Bind the compiled matcher directly: one attribute lookup less per request.
        object.__setattr__(self, "match", self._compiled.match)
        object.__setattr__(self, "routes", self._compiled.ordered)

    def match(self, method: str, path: str) -> Match:
        """Route ``method`` + canonical ``path`` (from ``paths.canonicalise``); never None."""
        assert self._compiled is not None
        return self._compiled.match(method, path)


def parse_routes(text: str, filename: str) -> RouteTable:
    """Parse and validate routes text; raise RoutesError listing every problem."""
    return _build(text, filename, hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_routes(path: str | Path) -> RouteTable:
    """Read and parse a routes file; raise RoutesError (also when it cannot be read or decoded)."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise RoutesError(
            [ConfigError(name, 0, "file", f"cannot read the routes file: {exc.strerror or exc}")]
        ) from exc
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RoutesError([ConfigError(name, line, "file", "the routes file is not valid UTF-8")]) from exc
    return _build(text, name, hashlib.sha256(data).hexdigest())


def _build(text: str, filename: str, sha256: str) -> RouteTable:
    doc = read_document(text, filename)
    default = Route(
        "default", None, _DEFAULT_TEMPLATE.text, doc.default, None, CompareRules(), doc.default_line,
        fallback=resolve(False, None, doc.fallback, doc.default),
        breaker=resolve(False, None, doc.breaker, doc.default),
    )  # fmt: skip
    pairs = [(route, template) for route, template, _ in doc.routes]
    compiled = CompiledRoutes(pairs, default)
    # Invalid routes are left out of the cross checks: that can hide a tie with a broken route, but never
    # invent one, so ties and unreachable routes are reported together with every other error.
    _cross_check(doc, compiled)
    if doc.reader.errors:
        raise RoutesError(sorted(doc.reader.errors, key=lambda e: e.line))
    return RouteTable(
        routes=compiled.ordered,
        upstreams=MappingProxyType(dict(doc.upstreams)),
        default=default,
        source=filename,
        sha256=sha256,
        shadow_settings=doc.shadow,
        _compiled=compiled,
    )


def _overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or not a.isdisjoint(b)


def _describe(route: Route, index: int) -> str:
    methods = ",".join(sorted(route.methods)) if route.methods else "any method"
    return f"routes[{index}] {route.name!r} (line {route.line}: {methods} {route.path})"


def _cross_check(doc: Document, compiled: CompiledRoutes) -> None:
    """Ties (equal specificity, overlapping requests) and unreachable routes, as load errors."""
    errors = doc.reader.errors
    routes = doc.routes
    tied: set[int] = set()
    for i, (a, ta, ia) in enumerate(routes):
        for b, tb, ib in routes[i + 1 :]:
            if ta.shape == tb.shape and _overlap(a.methods, b.methods):
                tied.update((ia, ib))
                if a.methods == b.methods:
                    message = f"duplicates {_describe(a, ia)}: same path and methods; remove one of them"
                else:
                    message = (
                        f"ties with {_describe(a, ia)}: both match the same requests with equal "
                        "specificity; split their methods, make one path more specific, or remove one"
                    )
                errors.append(ConfigError(doc.reader.filename, b.line, f"routes[{ib}].match", message))
    listed = sorted({m for route, _, _ in routes for m in route.methods or ()})
    for route, template, index in routes:
        if index in tied:
            continue
        methods = sorted(route.methods) if route.methods is not None else [*listed, _ANY_METHOD]
        winners = [compiled.match(m, p).route for m, p in compiled.witnesses(template, methods)]
        if all(winner is not route for winner in winners):
            names = sorted({f"{w.name!r} (line {w.line})" for w in winners})
            message = (
                f"route {route.name!r} is unreachable: every request it matches goes to a more specific "
                f"route ({', '.join(names)}); remove it or narrow the others"
            )
            errors.append(ConfigError(doc.reader.filename, route.line, f"routes[{index}]", message))
