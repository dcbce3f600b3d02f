"""Express path syntax to routes.yaml templates: pure string work, shared by discovery and load errors.

Express 4 (path-to-regexp 0.1) writes ``/users/:id``, ``/:id?`` (optional), ``/:id(\\d+)`` (a regex
constraint), ``/:path*`` and ``*`` (the rest of the path); Express 5 (path-to-regexp 8) writes
``/users/:id``, ``/{:id}`` or ``{/:id}`` (optional groups), ``/*splat`` (one or more segments) and
``/{*splat}`` (zero or more). A template has whole-segment ``{name}`` params and a final ``{rest*}``
only, so:

- ``:id`` becomes ``{id}``; an optional part becomes two templates (without it, with it);
- a final wildcard becomes ``{name*}``, which also matches the bare prefix: harmless for a draft that
  sends everything to legacy, and the prefix itself is what ``/*splat`` leaves to the next route;
- a regex constraint is dropped (the gateway matches any one segment) and noted;
- regex paths, params inside a segment (``/:from-:to``, ``/file.:ext``), wildcards before the end and
  regex characters in literals cannot be expressed: :class:`Unexpressible` says why.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

__all__ = ["LITERAL_SEGMENT", "Translation", "Unexpressible", "hint", "translate"]

# What a literal template segment may hold (proxy.routing.template uses the same pattern).
LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@-]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_V4_PARAM = re.compile(r":([A-Za-z_$][\w$]*)(\((?:[^()\\]|\\.)*\))?([?*+])?")
_V5_PARAM = re.compile(r":([A-Za-z_$][\w$]*)|:\"([^\"]+)\"")
_V5_WILD = re.compile(r"\*([A-Za-z_$][\w$]*)")
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
_MAX_VARIANTS = 8


class Unexpressible(ValueError):
    """An Express path that no set of routes.yaml templates matches; ``str()`` is the reason."""


@dataclass(frozen=True)
class Translation:
    """The templates an Express path becomes (one, or more for optional parts) and what was lost."""

    templates: tuple[str, ...]
    notes: tuple[str, ...] = ()


def translate(path: str, major: int) -> Translation:
    """Translate an Express ``major`` (4 or 5) path string; raise Unexpressible with the reason."""
    if not path.startswith("/"):
        path = "/" + path
    variants = _optional_groups(path) if major >= 5 else [path]
    notes: list[str] = []
    templates: list[str] = []
    for variant in variants:
        for template in _segments(variant, major, notes):
            if template not in templates:
                templates.append(template)
    if len(templates) > _MAX_VARIANTS:
        raise Unexpressible(f"{len(templates)} optional combinations; write the routes you need by hand")
    return Translation(tuple(templates), tuple(dict.fromkeys(notes)))


def hint(text: str) -> str | None:
    """For a template written the Express way (or ``{id?}``), what to write instead; None if no idea."""
    try:
        found = _segments(text, 0, [])
    except Unexpressible as exc:
        return str(exc)
    if found == [text]:
        return None
    if len(found) == 1:
        old, new = text.split("/"), found[0].split("/")
        changed = [(o, n) for o, n in zip(old, new, strict=False) if o != n] if len(old) == len(new) else []
        what = "parameters" if all(not n.endswith("*}") for _, n in changed) else "a final wildcard"
        pairs = ", ".join(f"{n}, not {o}" for o, n in changed)
        return f"write {what} as {pairs}: the path is {found[0]!r}" if changed else f"write {found[0]!r}"
    listed = " and ".join(repr(t) for t in found)
    return f"an optional part needs one route per form: write {len(found)} routes, with paths {listed}"


def _optional_groups(path: str) -> list[str]:
    """Expand Express 5 ``{...}`` optional groups (innermost first) into every with/without variant."""
    out: list[str] = []
    pending = [path]
    while pending:
        current = pending.pop()
        inner = re.search(r"(?<!\\)\{([^{}]*)(?<!\\)\}", current)
        if inner is None:
            out.append(current)
        else:
            head, tail = current[: inner.start()], current[inner.end() :]
            pending.extend((head + tail, head + inner.group(1) + tail))
        if len(out) + len(pending) > 4 * _MAX_VARIANTS:
            raise Unexpressible("too many optional groups; write the routes you need by hand")
    return sorted(set(out), key=lambda p: (p.count("/"), p))


def _segments(path: str, major: int, notes: list[str]) -> list[str]:
    """One Express path (no optional groups left for 5) to templates; ``major`` 0 is the hint dialect."""
    choices: list[list[str | None]] = []  # per segment: the template segments it can be (None: absent)
    names: set[str] = set()
    raw = path.rstrip("/").split("/")[1:] if path != "/" else []
    for index, segment in enumerate(raw):
        last = index == len(raw) - 1
        choices.append(_segment(segment, last, major, names, notes, path))
    templates = []
    for combo in itertools.product(*choices):
        kept = [part for part in combo if part is not None]
        templates.append("/" + "/".join(kept))
    return list(dict.fromkeys(templates))


def _unique(name: str, names: set[str]) -> str:
    base = re.sub(r"\W", "_", name).lstrip("0123456789") or "param"
    candidate, n = base, 2
    while candidate in names:
        candidate, n = f"{base}{n}", n + 1
    names.add(candidate)
    return candidate


def _segment(
    segment: str, last: bool, major: int, names: set[str], notes: list[str], path: str
) -> list[str | None]:
    if segment == "":
        raise Unexpressible("an empty segment ('//')")
    template = _TEMPLATE_PARAM.fullmatch(segment)
    if major == 0 and template is not None:
        names.add(template.group(1))
        return [segment]
    if major == 0 and re.fullmatch(r"\{([A-Za-z_]\w*)\?\}", segment):
        return [None, "{" + _unique(segment[1:-2], names) + "}"]
    if segment == "*" and major != 5:
        if major == 0 and last:
            return [segment]  # a final '*' is a template wildcard already
        if not last:
            raise Unexpressible("a '*' before the last segment cannot be expressed")
        return ["{" + _unique("rest", names) + "*}"]
    wild = _V5_WILD.fullmatch(segment)
    if wild is not None and major != 4:
        if not last:
            raise Unexpressible(f"a wildcard ({segment}) before the last segment cannot be expressed")
        return ["{" + _unique(wild.group(1), names) + "*}"]
    param = _V4_PARAM.fullmatch(segment) if major != 5 else None
    if param is not None:
        name = _unique(param.group(1), names)
        if param.group(2):
            notes.append(
                f"the constraint {param.group(2)} on :{param.group(1)} is not checked by the gateway"
            )
        modifier = param.group(3)
        if modifier in ("*", "+"):
            if not last:
                raise Unexpressible(f"a repeated parameter ({segment}) before the last segment")
            return ["{" + name + "*}"]
        return [None, "{" + name + "}"] if modifier == "?" else ["{" + name + "}"]
    param5 = _V5_PARAM.fullmatch(segment) if major != 4 else None
    if param5 is not None:
        return ["{" + _unique(param5.group(1) or param5.group(2), names) + "}"]
    # In the hint dialect ':' is a literal character, except at the start of a segment.
    colon = ":" in segment and (major != 0 or segment.startswith(":"))
    express_only = colon or (major == 4 and re.search(r"[()?+]", segment) is not None)
    if "*" in segment or express_only:
        raise Unexpressible(
            f"segment {segment!r} mixes text with a parameter or a pattern; a template segment "
            "is either literal text or one whole {param}"
        )
    literal = segment.replace("\\", "") if major == 5 else segment
    if LITERAL_SEGMENT.fullmatch(literal) is None or literal in (".", ".."):
        raise Unexpressible(f"segment {segment!r} has characters a template literal cannot hold")
    return [literal]
