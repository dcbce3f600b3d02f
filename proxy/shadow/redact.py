"""Redaction of secrets before anything from a shadowed exchange is stored.

Headers that carry credentials (Authorization, Cookie, Set-Cookie, ...) lose their values; JSON members,
query parameters and form fields whose name contains one of the configured words (``redact`` in
routes.yaml: password, token, secret, key by default; case-insensitive substring) are replaced by
``[REDACTED]``. Bodies that cannot be parsed (truncated JSON, plain text) go through a textual pass with
the same words, and bearer credentials are masked wherever they appear. Pure; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import orjson

__all__ = ["REDACTED", "SENSITIVE_HEADERS", "Redactor"]

REDACTED: Final = "[REDACTED]"

# Always redacted, whatever the configured words: these carry credentials by definition.
SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-strangler-dry-run"}
)

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


class Redactor:
    """Redacts names containing any of ``words`` (case-insensitive) and the credential headers."""

    def __init__(self, words: Iterable[str] = ("password", "token", "secret", "key")) -> None:
        self.words = tuple(w.lower() for w in words if w)
        alt = "|".join(re.escape(w) for w in self.words) or r"(?!x)x"
        # "name": value   (JSON text, also when truncated mid-value)
        self._json_text = re.compile(
            rf'(?i)("[^"\\]*(?:{alt})[^"\\]*"\s*:\s*)("(?:[^"\\]|\\.)*(?:"|$)|[^,}}\]\s]+)'
        )
        # name=value      (query strings, form bodies, cookie-like text)
        self._pair_text = re.compile(rf"(?i)(^|[?&;\s,])([^=&;\s,]*(?:{alt})[^=&;\s,]*=)([^&;\s,]*)")
        # Most strings (names, emails, dates) mention no secret word: one search spares three substitutions.
        self._hint = re.compile(rf"(?i){alt}|bearer|basic")
        self._sensitive: dict[str, bool] = {}

    def sensitive(self, name: str) -> bool:
        """True when a field or parameter called ``name`` must not be stored."""
        known = self._sensitive.get(name)
        if known is None:
            low = name.lower()
            known = any(w in low for w in self.words)
            if len(self._sensitive) < 10000:  # field names repeat; bound the memo for odd inputs
                self._sensitive[name] = known
        return known

    def headers(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Headers with credential values replaced (names lower-cased)."""
        out = []
        for name, value in headers:
            low = name.lower()
            if low in SENSITIVE_HEADERS or self.sensitive(low):
                out.append((low, REDACTED))
            else:
                out.append((low, self.text(value)))
        return out

    def value(self, value: Any) -> Any:
        """A JSON value with every sensitive member replaced, recursively (a new object)."""
        if isinstance(value, dict):
            return {k: (REDACTED if self.sensitive(k) else self.value(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def query(self, query: str) -> str:
        """A query string with sensitive parameters' values replaced (other bytes untouched)."""
        if not query:
            return query
        parts = []
        for item in query.split("&"):
            name = item.split("=", 1)[0]
            decoded = parse_qsl(name + "=x", keep_blank_values=True)
            key = decoded[0][0] if decoded else name
            if self.sensitive(key) or self.sensitive(name):
                parts.append(f"{name}={quote(REDACTED)}")
            else:
                parts.append(self.text(item))
        return "&".join(parts)

    def path_qs(self, path_qs: str) -> str:
        """``/path?query`` with the query redacted."""
        path, sep, query = path_qs.partition("?")
        return path + sep + self.query(query) if sep else path

    def path_value(self, path: str) -> bool:
        """True when a diff path (``$.tokens.access_token``, ``headers.cookie``) names a secret."""
        if path.startswith("headers.") and path[8:] in SENSITIVE_HEADERS:
            return True
        return any(self.sensitive(seg) for seg in re.findall(r"[A-Za-z_][A-Za-z0-9_-]*", path))

    def text(self, text: str) -> str:
        """Free text with bearer credentials and ``name: value`` / ``name=value`` secrets masked."""
        if not text or self._hint.search(text) is None:
            return text
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        text = self._json_text.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
        return self._pair_text.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)

    def body(self, body: bytes, content_type: str | None, limit: int) -> str:
        """A storable, redacted rendering of ``body``, at most about ``limit`` characters."""
        if not body:
            return ""
        if content_type and "json" in content_type.lower():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
            else:
                rendered = orjson.dumps(self.value(doc)).decode()
                return rendered if len(rendered) <= limit else rendered[:limit] + "…"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(body)} bytes, not UTF-8 text>"
        # Redact before truncating so a cut never exposes a value the pattern would have matched.
        text = self.text(text)
        return text if len(text) <= limit else text[:limit] + "…"

    def difference(self, diff: dict[str, Any]) -> dict[str, Any]:
        """A stored difference (``Difference.as_json()``) with values under sensitive paths hidden."""
        sides = ("control", "candidate")
        if self.path_value(str(diff.get("path", ""))):
            return {**diff, **{s: REDACTED if diff.get(s) is not None else None for s in sides}}
        return {**diff, **{s: self.value(diff.get(s)) for s in sides}}
