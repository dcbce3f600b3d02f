"""Pure comparison of a control (legacy) response with a candidate (new) response.

``compare(control, candidate, rules)`` returns None when the two agree under the route's rules, else a
``Diff`` listing every difference with its path: ``status``, ``headers.<name>``, ``body`` (bytes or
hash) or a JSON path such as ``$.items[3].author.name``. JSON bodies are compared structurally (changed
value, changed type, missing, extra, array length); rules ignore paths, compare arrays as multisets,
allow a numeric tolerance and treat null like a missing key. Compressed bodies are decoded first.
No I/O here; orjson does the parsing because this runs for every shadowed request.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from proxy.routing.jsonpath import WILDCARD, Segment, parse_path
from proxy.routing.table import CompareRules

__all__ = [
    "KINDS",
    "Diff",
    "Difference",
    "Observed",
    "any_match",
    "compare",
    "decode_body",
    "format_path",
    "normalise_path",
]

# The fixed vocabulary of difference kinds (stored, reported and documented).
KINDS: Final = ("status", "header", "changed", "type", "missing", "extra", "length", "body", "hash")

_INDEX = re.compile(r"\[\d+\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")

try:  # brotli is optional: "br" bodies are compared as raw bytes when it is absent
    import brotli as _brotli  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None


@dataclass(frozen=True)
class Observed:
    """One side's response as the comparison sees it.

    ``headers`` are (lower-case name, value) pairs. ``complete`` is False when the body exceeded the
    body cap: ``body`` then holds only a prefix and ``digest`` (sha256 hex of all bytes as received)
    is what gets compared.
    """

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    complete: bool = True
    digest: str | None = None
    _by_name: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Several lookups per comparison: index the headers once.
        by_name: dict[str, str] = {}
        for k, v in self.headers:
            by_name[k] = f"{by_name[k]}, {v}" if k in by_name else v
        object.__setattr__(self, "_by_name", by_name)

    def header(self, name: str) -> str | None:
        """All values of header ``name`` joined with ", " (None when absent)."""
        return self._by_name.get(name)


@dataclass(frozen=True)
class Difference:
    """One difference: where, what kind (see KINDS), and the control and candidate values."""

    path: str
    kind: str
    control: Any = None
    candidate: Any = None

    def as_json(self) -> dict[str, Any]:
        """A plain dict for storage and reports."""
        return {"path": self.path, "kind": self.kind, "control": self.control, "candidate": self.candidate}


@dataclass(frozen=True)
class Diff:
    """The differences between a control and a candidate response (never empty)."""

    differences: tuple[Difference, ...]
    paths: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(sorted({normalise_path(d.path) for d in self.differences})))

    @property
    def signature(self) -> str:
        """The sorted set of normalised differing paths; with the route name it identifies a diff."""
        return " ".join(self.paths)


def normalise_path(path: str) -> str:
    """Replace array indices by ``[*]``: ``$.items[3].id`` -> ``$.items[*].id``."""
    return _INDEX.sub("[*]", path)


def format_path(segments: Sequence[Segment]) -> str:
    """Render segments as a JSON path (``$.a[0].b``; odd names quoted as ``["a b"]``)."""
    parts = ["$"]
    for seg in segments:
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif isinstance(seg, str):
            parts.append(f".{seg}" if _NAME.match(seg) else f"[{orjson.dumps(seg).decode()}]")
        else:
            parts.append("[*]")
    return "".join(parts)


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes | None:
    """Undo Content-Encoding (gzip, deflate, br); None if undecodable or larger than ``limit``."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    data = body
    # Encodings are listed in the order applied, so undo them from the last one.
    for name in reversed([e.strip().lower() for e in encoding.split(",") if e.strip()]):
        try:
            if name in ("gzip", "x-gzip"):
                data = _inflate(data, zlib.MAX_WBITS | 16, limit)
            elif name == "deflate":
                try:
                    data = _inflate(data, zlib.MAX_WBITS, limit)
                except zlib.error:  # some servers send raw deflate without the zlib header
                    data = _inflate(data, -zlib.MAX_WBITS, limit)
            elif name == "br" and _brotli is not None:
                data = _brotli.decompress(data)
                if len(data) > limit:
                    raise ValueError("too large")
            elif name != "identity":
                return None
        except (zlib.error, ValueError, OSError):
            return None
        except Exception:  # brotli raises its own error class
            return None
    return data


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    dec = zlib.decompressobj(wbits)
    out = dec.decompress(data, limit + 1)
    if len(out) > limit or dec.unconsumed_tail:
        raise ValueError("decoded body larger than the limit")
    return out


@dataclass(frozen=True)
class _Compiled:
    ignore: tuple[tuple[Segment, ...], ...]
    sets: tuple[tuple[Segment, ...], ...]
    tolerance: float
    null_equals_missing: bool
    headers: tuple[str, ...]


@functools.lru_cache(maxsize=1024)
def _compile(rules: CompareRules) -> _Compiled:
    # CompareRules is frozen and hashable; routes are few, so parse each rule set once.
    return _Compiled(
        ignore=tuple(parse_path(p) for p in rules.ignore),
        sets=tuple(parse_path(p) for p in rules.sets),
        tolerance=float(rules.tolerance),
        null_equals_missing=rules.null_equals_missing,
        headers=tuple(h.lower() for h in rules.headers),
    )


def _matches(pattern: tuple[Segment, ...], path: Sequence[Segment]) -> bool:
    if len(pattern) != len(path):
        return False
    for want, got in zip(pattern, path, strict=True):
        if want is WILDCARD:
            if not isinstance(got, int) and got is not WILDCARD:
                return False
        elif want != got:
            return False
    return True


def any_match(patterns: tuple[tuple[Segment, ...], ...], path: Sequence[Segment]) -> bool:
    """Whether ``path`` matches one of ``patterns`` (``[*]`` matches any index)."""
    return any(_matches(p, path) for p in patterns)


_CONTAINERS: Final = (dict, list)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Walker:
    """Structural JSON diff under compiled rules; collects differences in document order."""

    def __init__(self, rules: _Compiled) -> None:
        self.rules = rules
        self.out: list[Difference] = []

    def walk(self, c: Any, d: Any, path: list[Segment]) -> None:
        rules = self.rules
        if rules.ignore and any_match(rules.ignore, path):
            return
        # Equal subtrees have no difference under any rule: skip them at C speed. Python's == says
        # True == 1, so equal bytes (orjson, also C) confirm it; a false "not equal" only costs the walk.
        if type(c) in _CONTAINERS and c == d and orjson.dumps(c) == orjson.dumps(d):
            return
        tc, td = _type(c), _type(d)
        if tc != td:
            self.out.append(Difference(format_path(path), "type", c, d))
        elif tc == "object":
            self._objects(c, d, path)
        elif tc == "array":
            if rules.sets and any_match(rules.sets, path):
                self._sets(c, d, path)
                return
            if len(c) != len(d):
                self.out.append(Difference(format_path(path), "length", len(c), len(d)))
            for i, (ci, di) in enumerate(zip(c, d, strict=False)):
                path.append(i)
                self.walk(ci, di, path)
                path.pop()
        elif tc == "number" and rules.tolerance > 0:
            if not math.isclose(c, d, rel_tol=0.0, abs_tol=rules.tolerance):
                self.out.append(Difference(format_path(path), "changed", c, d))
        elif c != d:
            self.out.append(Difference(format_path(path), "changed", c, d))

    def _objects(self, c: dict[str, Any], d: dict[str, Any], path: list[Segment]) -> None:
        nem = self.rules.null_equals_missing
        for key, cv in c.items():
            path.append(key)
            if key in d:
                self.walk(cv, d[key], path)
            elif not (nem and cv is None) and not any_match(self.rules.ignore, path):
                self.out.append(Difference(format_path(path), "missing", cv, None))
            path.pop()
        for key, dv in d.items():
            if key not in c:
                path.append(key)
                if not (nem and dv is None) and not any_match(self.rules.ignore, path):
                    self.out.append(Difference(format_path(path), "extra", None, dv))
                path.pop()

    def _sets(self, c: list[Any], d: list[Any], path: list[Segment]) -> None:
        # Multiset comparison: canonicalise each element (ignored paths and, with null_equals_missing,
        # null members removed; keys sorted), then report control-only as missing, candidate-only as extra.
        path.append(WILDCARD)
        ckeys = [self._canonical(v, path) for v in c]
        dkeys = [self._canonical(v, path) for v in d]
        cnt_d = Counter(dkeys)
        where = format_path(path)
        for key, value in zip(ckeys, c, strict=True):
            if cnt_d[key] > 0:
                cnt_d[key] -= 1
            else:
                self.out.append(Difference(where, "missing", value, None))
        cnt_c = Counter(ckeys)
        for key, value in zip(dkeys, d, strict=True):
            if cnt_c[key] > 0:
                cnt_c[key] -= 1
            else:
                self.out.append(Difference(where, "extra", None, value))
        path.pop()

    def _canonical(self, value: Any, path: list[Segment]) -> bytes:
        return orjson.dumps(self._strip(value, path), option=orjson.OPT_SORT_KEYS)

    def _strip(self, value: Any, path: list[Segment]) -> Any:
        rules = self.rules
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                path.append(k)
                keep = not any_match(rules.ignore, path) and not (rules.null_equals_missing and v is None)
                if keep:
                    out[k] = self._strip(v, path)
                path.pop()
            return out
        if isinstance(value, list):
            path.append(WILDCARD)
            items = [self._strip(v, path) for v in value]
            if rules.sets and any_match(rules.sets, path[:-1]):
                items.sort(key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
            path.pop()
            return items
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1 and 1.0 are the same JSON number
        return value


def _norm_header(name: str, value: str | None) -> str | None:
    if value is None or name != "content-type":
        return value
    # "application/json; charset=utf-8" and "application/json;charset=UTF-8" mean the same thing.
    return ";".join(part.strip() for part in value.lower().split(";"))


def _is_json(side: Observed) -> bool:
    ctype = side.header("content-type") or ""
    return "json" in ctype.lower()


def compare(
    control: Observed, candidate: Observed, rules: CompareRules, body_cap: int = 1 << 20
) -> Diff | None:
    """Compare control with candidate under ``rules``; None when they agree."""
    compiled = _compile(rules)
    out: list[Difference] = []
    if control.status != candidate.status:
        out.append(Difference("status", "status", control.status, candidate.status))
    for name in compiled.headers:
        cv = _norm_header(name, control.header(name))
        dv = _norm_header(name, candidate.header(name))
        if cv != dv:
            out.append(Difference(f"headers.{name}", "header", cv, dv))
    out.extend(_compare_bodies(control, candidate, compiled, body_cap))
    return Diff(tuple(out)) if out else None


def _compare_bodies(control: Observed, candidate: Observed, rules: _Compiled, cap: int) -> list[Difference]:
    if not (control.complete and candidate.complete):
        if control.digest is not None and control.digest == candidate.digest:
            return []
        return [Difference("body", "hash", control.digest, candidate.digest)]
    same_encoding = control.header("content-encoding") == candidate.header("content-encoding")
    if same_encoding and control.body == candidate.body:
        return []  # the common case: identical bytes, nothing to parse
    cbody = decode_body(control.body, control.header("content-encoding"), cap)
    dbody = decode_body(candidate.body, candidate.header("content-encoding"), cap)
    if cbody is None or dbody is None:
        return [Difference("body", "body", len(control.body), len(candidate.body))]
    if cbody == dbody:
        return []
    if _is_json(control) or _is_json(candidate):
        try:
            cdoc, ddoc = orjson.loads(cbody), orjson.loads(dbody)
        except orjson.JSONDecodeError:
            pass
        else:
            walker = _Walker(rules)
            walker.walk(cdoc, ddoc, [])
            return walker.out
    return [Difference("body", "body", len(cbody), len(dbody))]
