"""Cache validators and conditional GETs, exactly as Express computes them (docs/API.md, Caching).

The legacy app sets ``ETag`` (and ``Last-Modified`` for users) itself and lets Express's ``res.send``
answer 304 when the ``fresh`` package says the client's copy is fresh. This module is the same
algorithm: :func:`etag` is the ``etag`` package's strong form, :func:`is_fresh` is ``fresh`` 2.0.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web
from multidict import CIMultiDictProxy

NO_STORE = "no-store"
# Request "Cache-Control: no-cache" forces a full answer (an end-to-end reload), as in `fresh`.
_NO_CACHE_RE = re.compile(r"(?:^|,)\s*?no-cache\s*?(?:,|$)")


def etag(body: bytes) -> str:
    """The strong ETag of a JSON body: ``"<length hex>-<sha1 base64, 27 chars>"`` (the etag package)."""
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()[:27]
    return f'"{len(body):x}-{digest}"'


def http_date(iso: str) -> str:
    """``2026-11-21T06:04:00.123Z`` -> ``Sat, 21 Nov 2026 06:04:00 GMT`` (whole seconds, like toUTCString)."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).replace(microsecond=0)
    return format_datetime(moment, usegmt=True)


def public(max_age: int) -> str:
    """The Cache-Control of a public, cacheable representation."""
    return f"public, max-age={max_age}"


def cacheable(response: web.Response, max_age: int, updated_at: str | None = None) -> web.Response:
    """Mark a public representation cacheable: ETag of its body, Last-Modified when the row's
    ``updated_at`` covers everything in it, and ``Cache-Control: public, max-age=<max_age>``."""
    body = response.body
    assert isinstance(body, bytes)
    response.headers["ETag"] = etag(body)
    if updated_at is not None:
        response.headers["Last-Modified"] = http_date(updated_at)
    response.headers["Cache-Control"] = public(max_age)
    return response


def _timestamp(value: str) -> float | None:
    """JavaScript's Date.parse for the dates clients send: HTTP dates, else ISO 8601 (no zone: UTC,
    the servers' zone). V8 also reads looser forms ("Jan 1 2099"); those count as unparsable here."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _tokens(value: str) -> list[str]:
    # `fresh`'s parseTokenList: split on commas, dropping spaces around each token.
    tokens: list[str] = []
    start = end = 0
    for i, ch in enumerate(value):
        if ch == " ":
            if start == end:
                start = end = i + 1
        elif ch == ",":
            tokens.append(value[start:end])
            start = end = i + 1
        else:
            end = i + 1
    tokens.append(value[start:end])
    return tokens


def is_fresh(request: CIMultiDictProxy[str], tag: str | None, last_modified: str | None) -> bool:
    """Whether a GET/HEAD may be answered 304: If-None-Match first, If-Modified-Since otherwise."""
    # Node joins repeated If-None-Match and Cache-Control lines with ", " and keeps the first
    # If-Modified-Since; read them the same way.
    none_match = ", ".join(request.getall("If-None-Match", []))
    modified_since = request.get("If-Modified-Since", "")
    if not none_match and not modified_since:
        return False
    cache_control = ", ".join(request.getall("Cache-Control", []))
    if cache_control and _NO_CACHE_RE.search(cache_control):
        return False
    if none_match:
        if none_match == "*":
            return True
        if not tag:
            return False
        return any(t == tag or t == "W/" + tag or "W/" + t == tag for t in _tokens(none_match))
    if not last_modified:
        return False
    since, modified = _timestamp(modified_since), _timestamp(last_modified)
    return since is not None and modified is not None and modified <= since
