"""Request validation exactly as docs/API.md words it (field order, messages, one entry per field).

A body spec is a tuple of ``(field, rule)``; a rule returns an error message or None. Lengths count
Unicode code points (Python's ``len``), as the contract says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from multidict import MultiDict, MultiMapping
from yarl import URL

from services.errors import FieldError, ValidationFailed

Rule = Callable[[str], "str | None"]
Spec = tuple[tuple[str, Rule], ...]

# fullmatch, not `$`: Python's `$` also matches before a final newline, JavaScript's does not.
_EMAIL_RE = re.compile(r"[!-?A-~]+@[!-?A-~]+\.[!-?A-~]+")
_UINT_RE = re.compile(r"[0-9]{1,9}")
_ID_RE = re.compile(r"[1-9][0-9]{0,17}")


def any_string(value: str) -> str | None:
    """Only the required + string checks (login, refresh)."""
    return None


def email(value: str) -> str | None:
    """A plausible email address of at most 254 characters."""
    if len(value) > 254 or not _EMAIL_RE.fullmatch(value):
        return "must be a valid email address"
    return None


def length(low: int, high: int) -> Rule:
    """A rule: between `low` and `high` code points."""
    message = f"must be between {low} and {high} characters"

    def rule(value: str) -> str | None:
        return None if low <= len(value) <= high else message

    return rule


password = length(8, 128)
name = length(1, 100)
title = length(1, 200)
text_body = length(1, 10000)


def validate(body: Any, spec: Spec, *, partial: bool = False) -> dict[str, str]:
    """Check a parsed JSON body against `spec`; return the valid values or raise ValidationFailed.

    `partial` (PATCH): fields are optional, but at least one known field must be present.
    """
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError("body", "must be a JSON object")])
    problems: list[FieldError] = []
    values: dict[str, str] = {}
    for field, rule in spec:
        if field not in body:
            if not partial:
                problems.append(FieldError(field, "is required"))
            continue
        value = body[field]
        if not isinstance(value, str):
            problems.append(FieldError(field, "must be a string"))
            continue
        # PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database.
        message = "must not contain the NUL character" if "\x00" in value else rule(value)
        if message is not None:
            problems.append(FieldError(field, message))
        else:
            values[field] = value
    known = {field for field, _ in spec}
    for key in sorted(k for k in body if k not in known):  # by code point, as the legacy app sorts
        problems.append(FieldError(key, "unknown field"))
    if problems:
        raise ValidationFailed(problems)
    if partial and not values:
        raise ValidationFailed([FieldError("body", "must contain at least one field")])
    return values


# Node's querystring.parse (Express 5's query parser) reads the first 1000 `&`-separated pieces only.
MAX_QUERY_PIECES = 1000


def query_of(url: URL) -> MultiMapping[str]:
    """The query parameters as the legacy app sees them: pieces after the 1000th are ignored."""
    raw = url.raw_query_string
    if raw.count("&") < MAX_QUERY_PIECES:
        return url.query
    kept = "&".join(raw.split("&", MAX_QUERY_PIECES)[:MAX_QUERY_PIECES])
    return MultiDict(URL.build(query_string=kept, encoded=True).query)


def _one(query: MultiMapping[str], key: str) -> str | None:
    values = query.getall(key, [])
    if not values:
        return None
    # A repeated parameter arrives as an array in Express, which never matches the pattern.
    return values[0] if len(values) == 1 else "\x00"


def page_query(query: MultiMapping[str], *, author: bool = False) -> tuple[int, int, int | None]:
    """Parse ``limit``, ``offset`` (and ``author_id``) from a query string; raise ValidationFailed."""
    problems: list[FieldError] = []
    limit, offset, author_id = 20, 0, None
    raw = _one(query, "limit")
    if raw is not None:
        if _UINT_RE.fullmatch(raw) and 1 <= int(raw) <= 100:
            limit = int(raw)
        else:
            problems.append(FieldError("limit", "must be an integer between 1 and 100"))
    raw = _one(query, "offset")
    if raw is not None:
        if _UINT_RE.fullmatch(raw):
            offset = int(raw)
        else:
            problems.append(FieldError("offset", "must be a non-negative integer"))
    if author:
        raw = _one(query, "author_id")
        if raw is not None:
            if _ID_RE.fullmatch(raw):
                author_id = int(raw)
            else:
                problems.append(FieldError("author_id", "must be a positive integer"))
    if problems:
        raise ValidationFailed(problems)
    return limit, offset, author_id
