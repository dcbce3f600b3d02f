"""Endpoints from traffic: read access-log lines, infer path templates, count requests per method.

Two formats, detected per line: the gateway's JSON access log (``proxy.ops.accesslog``: ``method``,
``path``; any JSON line with those keys, or ``url``, will do) and the combined log format of nginx and
Apache (``... "GET /users/42?x=1 HTTP/1.1" 200 ...``). Queries are dropped; paths are canonicalised as
the gateway does (``proxy.routing.paths``) and lines it would refuse are counted as skipped.

Templates are inferred in two passes over the distinct paths:

1. a segment that looks like a value becomes a parameter: numbers, UUIDs, hex strings of 8+
   characters with a digit, tokens of 16+ letters and digits (base64url ids, ULIDs), and slugs
   (hyphenated words with a digit, or of four words or more: ``my-first-post-42``);
2. where more than ``max_literals`` distinct literals follow the same (already inferred) prefix,
   they are values too (``/tags/python``, ``/tags/rust``, ... become ``/tags/{id}``).

Literal segments are kept as they are (first spelling seen); ``/users/me`` stays next to ``/users/{id}``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from proxy.routing import paths

__all__ = ["Traffic", "infer_templates", "is_value", "read_traffic"]

_COMBINED = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "([A-Z][A-Z_-]*) (\S+)(?: [^"]*)?" (\d{3}) ')
_VALUE = [
    re.compile(r"\d+"),
    re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
    re.compile(r"(?=[^/]*\d)[0-9a-fA-F]{8,}"),
    re.compile(r"(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?=[^/]*\d)[a-z0-9]+(?:-[a-z0-9]+)+|[a-z0-9]+(?:-[a-z0-9]+){3,}"),
]
_METHOD = re.compile(r"[A-Z][A-Z_-]*")  # what routes.yaml accepts as a method
_PARAM = "\x00"  # a segment inferred to be a value, until the template is written out


@dataclass
class Traffic:
    """Requests seen: ``counts[(method, canonical path)]``, and how many lines were not requests."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    lines: int = 0
    skipped: int = 0
    formats: set[str] = field(default_factory=set)

    @property
    def requests(self) -> int:
        """Requests counted (lines read minus lines skipped)."""
        return sum(self.counts.values())


def read_traffic(lines: Iterable[str], traffic: Traffic | None = None) -> Traffic:
    """Count the requests in access-log ``lines`` (JSON or combined format), adding to ``traffic``."""
    seen = traffic if traffic is not None else Traffic()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        seen.lines += 1
        found = _parse(line)
        if found is None:
            seen.skipped += 1
            continue
        method, target, kind = found
        if _METHOD.fullmatch(method) is None:
            seen.skipped += 1
            continue
        try:
            path, _ = paths.canonicalise(target.encode("ascii"))
        except (paths.BadPath, UnicodeEncodeError):
            seen.skipped += 1
            continue
        seen.formats.add(kind)
        seen.counts[(method, path.rstrip("/") or "/")] += 1
    return seen


def _parse(line: str) -> tuple[str, str, str] | None:
    if line.startswith("{"):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        method, target = record.get("method"), record.get("path", record.get("url"))
        if isinstance(method, str) and isinstance(target, str) and target.startswith("/"):
            return method.upper(), target, "json"
        return None
    match = _COMBINED.match(line)
    if match is None or not match.group(2).startswith("/"):
        return None
    return match.group(1), match.group(2), "combined"


def is_value(segment: str) -> bool:
    """Whether a path segment looks like a value (an id, a hash, a slug) rather than a name."""
    return any(pattern.fullmatch(segment) for pattern in _VALUE)


def infer_templates(traffic: Traffic, max_literals: int = 20) -> dict[str, Counter[str]]:
    """Template -> requests per method, most requested first (see the module docstring)."""
    distinct = sorted({path for _, path in traffic.counts})
    split = {path: [_PARAM if is_value(s) else s for s in path[1:].split("/") if s] for path in distinct}
    longest = max((len(segs) for segs in split.values()), default=0)
    for position in range(longest):
        groups: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
        for segs in split.values():
            if len(segs) > position and segs[position] != _PARAM:
                groups[tuple(s.lower() for s in segs[:position])].add(segs[position].lower())
        crowded = {prefix for prefix, literals in groups.items() if len(literals) > max_literals}
        for segs in split.values():
            if len(segs) > position and tuple(s.lower() for s in segs[:position]) in crowded:
                segs[position] = _PARAM
    spelling: dict[str, str] = {}  # lower-cased template -> the first spelling seen
    result: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for (method, path), count in traffic.counts.items():
        template = _template(split[path])
        template = spelling.setdefault(template.lower(), template)
        result[template][method] += count
    return dict(sorted(result.items(), key=lambda item: (-sum(item[1].values()), item[0])))


def _template(segs: list[str]) -> str:
    out, n = [], 0
    for seg in segs:
        if seg == _PARAM:
            n += 1
            out.append("{id}" if n == 1 else f"{{id{n}}}")
        else:
            out.append(seg)
    return "/" + "/".join(out)
