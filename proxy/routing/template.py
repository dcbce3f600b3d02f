"""Path templates: parse, order by specificity, compile into an index, match without regexes.

A template is ``/`` followed by segments: a literal (``users``), a parameter ``{id}`` (exactly one
non-empty segment) or, last only, a wildcard ``{rest*}`` / ``*`` (zero or more segments: the rest, which
is what Express 4's ``*`` means too). Express spellings (``:id``, ``:id?``, ``*splat``, ``{id?}``) are
refused with the exact path or routes to write instead (``proxy.routing.express.hint``).
Specificity compares segment by segment: literal > parameter > end of template > wildcard; so between
two templates that agree on a prefix the longer literal/param one comes first, and ``/a`` beats
``/a/{rest*}`` for the path ``/a``. Routes are tried in that order and the first match wins.

Matching splits the path once, looks up a bucket keyed by (segment count, lower-cased first segment)
built at load time, and compares only the remaining literal segments of the few routes in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from proxy.routing.express import LITERAL_SEGMENT, hint
from proxy.routing.model import Match, Route

__all__ = ["CompiledRoutes", "Template", "TemplateError", "parse_template"]

LITERAL, PARAM, END, WILDCARD = 0, 1, 2, 3
_LITERAL = LITERAL_SEGMENT
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
_EMPTY: Mapping[str, str] = MappingProxyType({})


class TemplateError(ValueError):
    """A path template is malformed; the message says what to write instead."""


@dataclass(frozen=True)
class Template:
    """A parsed template: ``parts`` are (kind, literal or param name); ``key`` orders by specificity."""

    text: str
    parts: tuple[tuple[int, str], ...]

    @property
    def wildcard(self) -> bool:
        """Whether the last part is a wildcard."""
        return bool(self.parts) and self.parts[-1][0] == WILDCARD

    @property
    def key(self) -> tuple[int, ...]:
        """Sort key: smaller is more specific (see the module docstring)."""
        kinds = tuple(kind for kind, _ in self.parts)
        return kinds if self.wildcard else (*kinds, END)

    @property
    def shape(self) -> tuple[object, ...]:
        """Key plus lower-cased literals: two templates with equal shapes match the same paths."""
        return tuple((kind, value.lower() if kind == LITERAL else "") for kind, value in self.parts)


def parse_template(text: str) -> Template:
    """Parse a path template or raise TemplateError."""
    if not text.startswith("/"):
        raise TemplateError(f"path template {text!r} must start with '/'")
    if text == "/":
        return Template(text, ())
    if text.endswith("/"):
        raise TemplateError(
            f"path template {text!r} ends with '/': write it without (one trailing slash on a request "
            "is ignored anyway)"
        )
    parts: list[tuple[int, str]] = []
    names: set[str] = set()
    segments = text[1:].split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        param = _PARAM.fullmatch(segment)
        if segment == "*" or (param is not None and param.group(2)):
            if not last:
                raise TemplateError(
                    f"path template {text!r}: a wildcard ({segment}) must be the last segment"
                )
            name = "*" if segment == "*" else param.group(1) if param else "*"
            kind = WILDCARD
        elif param is not None:
            name, kind = param.group(1), PARAM
        elif segment == "":
            raise TemplateError(f"path template {text!r} has an empty segment ('//')")
        elif segment.startswith(":") or "*" in segment or (segment.startswith("{") and "?" in segment):
            # Written the Express way: say exactly what to write (the whole path, or the routes needed).
            raise TemplateError(f"path template {text!r}: {_hint(text)}")
        elif segment in (".", "..") or _LITERAL.fullmatch(segment) is None:
            raise TemplateError(
                f"path template {text!r}: segment {segment!r} is neither a literal (letters, digits and "
                "-._~!$&'()+,;=:@) nor a whole-segment {param} / {rest*} / *"
            )
        else:
            parts.append((LITERAL, segment))
            continue
        if name in names:
            raise TemplateError(f"path template {text!r} uses the parameter name {name!r} twice")
        names.add(name)
        parts.append((kind, name))
    return Template(text, tuple(parts))


def _hint(text: str) -> str:
    found = hint(text)
    return found or "write parameters as {name} and a final wildcard as {rest*} or * (the rest of the path)"


class _Compiled:
    """One route ready to match: counts, the literals to check, how to build the forward path."""

    __slots__ = ("checks", "fixed", "forward", "methods", "params", "route", "static", "wild")

    def __init__(self, route: Route, template: Template) -> None:
        self.route = route
        self.methods = route.methods
        self.wild: str | None = template.parts[-1][1] if template.wildcard else None
        fixed = template.parts[:-1] if template.wildcard else template.parts
        self.fixed = len(fixed)
        # Position 0 is checked by the index lookup, so only later literals need comparing.
        self.checks = tuple(
            (i, value.lower()) for i, (kind, value) in enumerate(fixed) if kind == LITERAL and i
        )
        self.params = tuple((i, value) for i, (kind, value) in enumerate(fixed) if kind == PARAM)
        self.forward: tuple[str | None, ...] = tuple(
            value if kind == LITERAL else None for kind, value in fixed
        )
        self.static = (
            "/" + "/".join(value for _, value in fixed) if not self.params and self.wild is None else None
        )

    def literal_at(self, index: int) -> str | None:
        """The lower-cased literal at segment ``index``, or None (param, wildcard, past the end)."""
        if index < self.fixed:
            literal = self.forward[index]
            return literal.lower() if literal is not None else None
        return None

    def match(self, segs: list[str]) -> Match | None:
        for i, lower in self.checks:
            if segs[i].lower() != lower:
                return None
        if self.static is not None:
            return Match(self.route, _EMPTY, self.static)
        params = {name: segs[i] for i, name in self.params}
        pieces = [segs[i] if lit is None else lit for i, lit in enumerate(self.forward)]
        if self.wild is not None:
            rest = "/".join(segs[self.fixed :])
            params[self.wild] = rest
            if rest:
                pieces.append(rest)
        return Match(self.route, params, "/" + "/".join(pieces))


class CompiledRoutes:
    """Routes in priority order plus the index ``match`` uses; the default route catches the rest."""

    def __init__(self, routes: Sequence[tuple[Route, Template]], default: Route) -> None:
        # Equal keys keep file order (line), so the table reads the same whichever way it was built.
        ordered = sorted(enumerate(routes), key=lambda item: (item[1][1].key, item[1][0].line, item[0]))
        self.ordered: tuple[Route, ...] = tuple(route for _, (route, _) in ordered)
        self.default = default
        compiled = [_Compiled(route, template) for _, (route, template) in ordered]
        firsts = {t.parts[0][1].lower() for _, t in routes if t.parts and t.parts[0][0] == LITERAL}
        self._cap = max((c.fixed for c in compiled), default=0) + 1
        self._index: dict[tuple[int, str | None], _Bucket] = {}
        for count in range(self._cap + 1):
            for first in (*firsts, None) if count else (None,):
                bucket = tuple(c for c in compiled if _fits(c, count, first))
                self._index[(count, first)] = _Bucket.build(bucket, count)

    def match(self, method: str, path: str) -> Match:
        """Route ``method`` + canonical ``path``; falls back to the default route (never None)."""
        inner = path[1:-1] if path.endswith("/") and len(path) > 1 else path[1:]
        segs = inner.split("/") if inner else []
        count = len(segs)
        if count > self._cap:
            count = self._cap
        entry = self._index.get((count, segs[0].lower() if segs else None))
        if entry is None:
            entry = self._index[(count, None)]
        at = entry.at
        candidates = entry.other if at < 0 else entry.by_literal.get(segs[at].lower(), entry.other)
        for compiled in candidates:
            methods = compiled.methods
            if methods is not None and method not in methods:
                continue
            found = compiled.match(segs)
            if found is not None:
                return found
        return Match(self.default, _EMPTY, path)

    def witnesses(self, template: Template, methods: Iterable[str]) -> list[tuple[str, str]]:
        """The most general requests ``template`` matches: fresh values for every param and wildcard.

        No literal equals a fresh value, so a route that wins all of them wins every request the
        template matches (the basis of the unreachable-route check).
        """
        fixed = [f"\x00{i}" if kind != LITERAL else value for i, (kind, value) in enumerate(template.parts)]
        paths = []
        if template.wildcard:
            fixed.pop()
            for extra in range(self._cap + 2):
                paths.append("/" + "/".join(fixed + [f"\x00w{j}" for j in range(extra)]))
        else:
            paths.append("/" + "/".join(fixed))
        return [(method, path) for method in methods for path in paths]


class _Bucket:
    """Candidates for one (segment count, first segment), split on a second discriminating segment.

    Tables like ``/api/v1/<resource>/...`` share their first segments, so the bucket picks the position
    with the most distinct literals and keys its candidates by that segment; routes with a parameter or
    wildcard there are in every sub-list (and in ``other``, used when the segment is no known literal).
    """

    __slots__ = ("at", "by_literal", "other")

    def __init__(self, at: int, by_literal: dict[str, tuple[_Compiled, ...]], other: tuple[_Compiled, ...]):
        self.at = at
        self.by_literal = by_literal
        self.other = other

    @classmethod
    def build(cls, bucket: tuple[_Compiled, ...], count: int) -> _Bucket:
        best: tuple[int, set[str]] = (-1, set())
        for at in range(1, count):
            literals = {lit for c in bucket if (lit := c.literal_at(at)) is not None}
            if len(literals) > max(1, len(best[1])):
                best = (at, literals)
        at, literals = best
        if at < 0:
            return cls(-1, {}, bucket)
        by_literal = {lit: tuple(c for c in bucket if c.literal_at(at) in (None, lit)) for lit in literals}
        return cls(at, by_literal, tuple(c for c in bucket if c.literal_at(at) is None))


def _fits(compiled: _Compiled, count: int, first: str | None) -> bool:
    if count < compiled.fixed or (compiled.wild is None and count != compiled.fixed):
        return False
    if compiled.fixed == 0 or not compiled.forward or compiled.forward[0] is None:
        return True
    return compiled.forward[0].lower() == first
