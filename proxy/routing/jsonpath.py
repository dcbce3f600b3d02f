"""The small JSON path dialect of compare rules: ``$``, ``.name``, ``[n]``, ``[*]``.

``parse_path("$.items[*].id")`` is ``("items", WILDCARD, "id")``: a field name is a ``str``, an array
index an ``int``, any array element ``WILDCARD``. Names are ``[A-Za-z_][A-Za-z0-9_-]*`` (enough for the
API's snake_case fields); quoting, slices and filters are not supported on purpose. Pure; compare.py
reuses it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["WILDCARD", "JsonPathError", "Segment", "parse_path"]


class _Wildcard:
    """The ``[*]`` segment (a singleton, printed as ``[*]``)."""

    def __repr__(self) -> str:
        return "WILDCARD"


WILDCARD: Final = _Wildcard()
Segment = str | int | _Wildcard

_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(0|[1-9][0-9]{0,8})\]|\[(\*)\]")


class JsonPathError(ValueError):
    """A path does not follow the dialect; the message says where and what is allowed."""


def parse_path(path: str) -> tuple[Segment, ...]:
    """Parse ``path`` into segments or raise JsonPathError."""
    if not path.startswith("$"):
        raise JsonPathError(f"JSON path {path!r} must start with '$' (for example '$.items[*].id')")
    segments: list[Segment] = []
    pos = 1
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            raise JsonPathError(
                f"JSON path {path!r}: unexpected {path[pos:]!r} at offset {pos}; "
                "allowed segments are .name, [n] and [*]"
            )
        name, index, star = match.groups()
        if name is not None:
            segments.append(name)
        elif index is not None:
            segments.append(int(index))
        else:
            assert star is not None
            segments.append(WILDCARD)
        pos = match.end()
    return tuple(segments)
