"""Shapes of JSON values: the JSON type plus a format class, for values generated on each call. Pure.

``shape_of(value)`` names what a value looks like without its content:

- ``integer`` (a JSON integer: ids), ``number`` (other numbers), ``boolean``, ``null``, ``object``, ``array``;
- ``uuid``;
- ``timestamp(<time>,<fraction digits>,<zone>)`` for an ISO 8601 date-time, e.g. ``timestamp(s,3,Z)``
  (seconds, milliseconds, "Z"); the zone form is ``Z``, ``+hh:mm``, ``+hhmm`` or ``none``; ``date`` for a
  bare ISO date;
- ``jwt(<header keys>;<payload keys>)``: a JSON Web Token by its claims set (key names, not values);
- ``token(<alphabet>,<length bucket>)``: an opaque token of 16 characters or more without spaces, with a
  digit in it (or, from 20 characters, both cases of letters: a random base64 token of 43 characters
  has no digit about once in 1,500), from one alphabet (``hex``, ``b64url``, ``b64``), its length
  bucket ``len // 8``;
- ``string`` for any other string.

``same_shapes``, ``on_generated`` and ``without`` apply shapes to a ``proxy.shadow.compare.Diff``.
Only *generated* shapes (``GENERATED_SHAPES``: integer, uuid, timestamp, jwt, token) can make a path
generated (proxy.shadow.noise): two different plain strings of the same "shape" are a real difference.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any, Final

import orjson

from proxy.routing.jsonpath import JsonPathError, Segment, parse_path
from proxy.routing.table import CompareRules
from proxy.shadow.compare import Diff, any_match, normalise_path

__all__ = ["generated_shape", "on_generated", "same_shapes", "shape_of", "without"]

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_STAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ](\d{2}:\d{2})(:\d{2})?(?:[.,](\d+))?(Z|z|[+-]\d{2}:\d{2}|[+-]\d{4})?\Z"
)
_JWT: Final = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)\Z")
_HEX: Final = re.compile(r"[0-9a-fA-F]+\Z")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
_B64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
_DIGIT: Final = re.compile(r"\d")


def _mixed_case(s: str) -> bool:
    return not s.isupper() and not s.islower() and any(c.isalpha() for c in s)

_GENERATED: Final = ("integer", "uuid", "timestamp(", "jwt(", "token(")


def shape_of(value: Any) -> str:
    """The shape of one JSON value (see the module's docstring)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return _string_shape(value)
    return "string"


def generated_shape(shape: str) -> bool:
    """Whether values of ``shape`` may be generated per call (ids, UUIDs, timestamps, JWTs, tokens)."""
    return shape.startswith(_GENERATED)


def _string_shape(s: str) -> str:
    if len(s) == 36 and _UUID.match(s):
        return "uuid"
    if len(s) >= 16 and s[4:5] == "-":
        m = _STAMP.match(s)
        if m is not None:
            unit = "s" if m.group(2) else "min"
            digits = len(m.group(3) or "")
            zone = m.group(4) or "none"
            if zone in ("Z", "z"):
                zone = "Z"
            elif len(zone) == 6:
                zone = "+hh:mm"
            elif zone != "none":
                zone = "+hhmm"
            return f"timestamp({unit},{digits},{zone})"
    if len(s) == 10 and _DATE.match(s):
        return "date"
    if s.count(".") == 2 and (jwt := _jwt_shape(s)) is not None:
        return jwt
    if len(s) >= 16 and (_DIGIT.search(s) or (len(s) >= 20 and _mixed_case(s))):
        if _HEX.match(s):
            return f"token(hex,{len(s) // 8})"
        if _B64URL.match(s):
            return f"token(b64url,{len(s) // 8})"
        if _B64.match(s):
            return f"token(b64,{len(s) // 8})"
    return "string"


def _jwt_shape(s: str) -> str | None:
    m = _JWT.match(s)
    if m is None:
        return None
    try:
        header = orjson.loads(_b64url(m.group(1)))
        payload = orjson.loads(_b64url(m.group(2)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict) or "alg" not in header:
        return None
    return f"jwt({','.join(sorted(header))};{','.join(sorted(payload))})"


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def same_shapes(diff: Diff) -> tuple[frozenset[str], frozenset[str]]:
    """The normalised paths where every difference is a value change with the same shape on both sides
    (``proxy.shadow.shapes``), and the subset of those whose shape is a generated one (ids, UUIDs,
    timestamps, JWTs, tokens). A type, missing or extra difference is never a same-shape one."""
    same: dict[str, bool] = {}
    generated: dict[str, bool] = {}
    for d in diff.differences:
        path = normalise_path(d.path)
        if d.kind == "changed" and path.startswith("$"):
            shape = shape_of(d.control)
            ok = shape == shape_of(d.candidate)
            gen = ok and generated_shape(shape)
        else:
            ok = gen = False
        same[path] = same.get(path, True) and ok
        generated[path] = generated.get(path, True) and gen
    return (frozenset(p for p, ok in same.items() if ok), frozenset(p for p, ok in generated.items() if ok))


@functools.lru_cache(maxsize=1024)
def _generated_patterns(rules: CompareRules) -> tuple[tuple[Segment, ...], ...]:
    return tuple(parse_path(p) for p in rules.generated)


@functools.lru_cache(maxsize=4096)
def _path_segments(path: str) -> tuple[Segment, ...] | None:
    try:
        return parse_path(path)
    except JsonPathError:
        return None


def on_generated(path: str, rules: CompareRules) -> bool:
    """Whether normalised JSON ``path`` is one of the route's ``compare.generated`` paths."""
    patterns = _generated_patterns(rules)
    if not patterns or not path.startswith("$"):
        return False
    segments = _path_segments(path)
    return segments is not None and any_match(patterns, segments)


def without(diff: Diff, drop: frozenset[str]) -> Diff | None:
    """``diff`` less the differences at the normalised paths ``drop`` (None when nothing is left)."""
    kept = tuple(d for d in diff.differences if normalise_path(d.path) not in drop)
    if len(kept) == len(diff.differences):
        return diff
    return Diff(kept) if kept else None
