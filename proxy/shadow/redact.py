"""Redaction of secrets and personal data before anything from a shadowed exchange is stored.

By name: headers that carry credentials (Authorization, Cookie, Set-Cookie, ...) lose their values; JSON
members, query parameters, form fields and headers whose name contains one of the configured words
(``redact`` in routes.yaml; case-insensitive substring) are replaced by ``[REDACTED]``.

By value, whatever the name: JWT-shaped strings, high-entropy tokens (random-looking runs of 24+
base64/hex characters) and e-mail addresses are replaced wherever they appear (values, free text, object
keys), and so are the values of members named like personal data (``personal`` in routes.yaml). These
keep the diff meaningful: the placeholder names the kind and carries a short keyed hash of the value
(``[REDACTED jwt 3fa1c2]``), so a reader still sees whether control and candidate differed, but not what
they held. The hash key is random per process, so the tags cannot be looked up.

Bodies that cannot be parsed (truncated JSON, plain text) go through the textual passes. Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import orjson

from proxy.routing.model import PERSONAL_WORDS, REDACT_WORDS

__all__ = [
    "DEFAULT_PERSONAL", "DEFAULT_WORDS", "PERSONAL_HEADERS", "REDACTED", "SENSITIVE_HEADERS", "Redactor",
    "looks_like_token",
]  # fmt: skip

REDACTED: Final = "[REDACTED]"

# Always redacted, whatever the configured words: these carry credentials by definition.
SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-strangler-dry-run"}
)

# Headers that carry personal data (the client's address): kept apart from the compared ones' values.
PERSONAL_HEADERS: Final = frozenset(
    {"x-forwarded-for", "x-real-ip", "forwarded", "x-client-ip", "true-client-ip"}
)
DEFAULT_WORDS: Final = REDACT_WORDS
DEFAULT_PERSONAL: Final = PERSONAL_WORDS

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# Values that are secrets or personal whatever their name: a JWT, an e-mail address, a token-like run.
_VALUES = re.compile(
    r"(?P<jwt>eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
    r"|(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
    r"|(?P<token>[A-Za-z0-9_+/=-]{24,})"
)
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_TAG_KEY: Final = secrets.token_bytes(16)  # per process: tags compare sides, never reveal values


def _tag(kind: str, value: str) -> str:
    digest = hmac.new(_TAG_KEY, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"[REDACTED {kind} {digest[:6]}]"


def looks_like_token(run: str) -> bool:
    """A random-looking credential: 32+ hex digits, or 24+ base64 characters mixing upper and lower case
    and digits with high entropy (timestamps, paths, words and UUIDs do not qualify)."""
    if _HEX.fullmatch(run):
        return True
    mixed = any(c.isdigit() for c in run) and any(c.islower() for c in run) and any(c.isupper() for c in run)
    if not mixed:
        return False
    n = len(run)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(run).values())
    return entropy >= 3.8


def _mask_values(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        kind = m.lastgroup or "token"
        value = m.group()
        if kind == "token" and not looks_like_token(value):
            return value
        return _tag(kind, value)

    return _VALUES.sub(one, text)


class Redactor:
    """Redacts names containing any of ``words`` (case-insensitive) and the credential headers."""

    def __init__(
        self, words: Iterable[str] = DEFAULT_WORDS, personal: Iterable[str] = DEFAULT_PERSONAL
    ) -> None:
        self.words = tuple(w.lower() for w in words if w)
        self.personal_words = tuple(w.lower() for w in personal if w)
        alt = "|".join(re.escape(w) for w in self.words) or r"(?!x)x"
        # "name": value   (JSON text, also when truncated mid-value)
        self._json_text = re.compile(
            rf'(?i)("[^"\\]*(?:{alt})[^"\\]*"\s*:\s*)("(?:[^"\\]|\\.)*(?:"|$)|[^,}}\]\s]+)'
        )
        # name=value      (query strings, form bodies, cookie-like text)
        self._pair_text = re.compile(rf"(?i)(^|[?&;\s,])([^=&;\s,]*(?:{alt})[^=&;\s,]*=)([^&;\s,]*)")
        # Most strings (names, dates) mention no secret word: one search spares three substitutions.
        self._hint = re.compile(rf"(?i){alt}|bearer|basic")
        self._sensitive: dict[str, bool] = {}
        self._personal: dict[str, bool] = {}

    def sensitive(self, name: str) -> bool:
        """True when a field or parameter called ``name`` must not be stored."""
        known = self._sensitive.get(name)
        if known is None:
            low = name.lower()
            known = any(w in low for w in self.words)
            if len(self._sensitive) < 10000:  # field names repeat; bound the memo for odd inputs
                self._sensitive[name] = known
        return known

    def personal(self, name: str) -> bool:
        """True when a field called ``name`` holds personal data (stored as a tagged placeholder)."""
        known = self._personal.get(name)
        if known is None:
            low = name.lower()
            known = any(w in low for w in self.personal_words)
            if len(self._personal) < 10000:
                self._personal[name] = known
        return known

    def headers(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Headers with credential values replaced (names lower-cased)."""
        out = []
        for name, value in headers:
            low = name.lower()
            if low in SENSITIVE_HEADERS or self.sensitive(low):
                out.append((low, REDACTED))
            elif low in PERSONAL_HEADERS or self.personal(low):
                out.append((low, _tag("personal", value)))
            else:
                out.append((low, self.text(value)))
        return out

    def value(self, value: Any) -> Any:
        """A JSON value with every sensitive member replaced, recursively (a new object)."""
        if isinstance(value, dict):
            return {self._key(k): self._member(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _member(self, name: str, value: Any) -> Any:
        if self.sensitive(name):
            return REDACTED
        return self._personal_value(value) if self.personal(name) else self.value(value)

    def _personal_value(self, value: Any) -> Any:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return _tag("personal", str(value))
        return self.value(value)

    def _key(self, name: str) -> str:
        # A secret used as an object key (a token-keyed map) is masked like any other value.
        return _mask_values(name) if len(name) >= 24 or "@" in name else name

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

    def path_personal(self, path: str) -> bool:
        """True when a diff path names personal data (``$.user.email``, ``headers.x-forwarded-for``)."""
        if path.startswith("headers.") and path[8:] in PERSONAL_HEADERS:
            return True
        return any(self.personal(seg) for seg in re.findall(r"[A-Za-z_][A-Za-z0-9_-]*", path))

    def text(self, text: str) -> str:
        """Free text with JWTs, tokens, e-mail addresses, bearer credentials and ``name: value`` /
        ``name=value`` secrets masked."""
        if not text:
            return text
        text = _mask_values(text)
        if self._hint.search(text) is None:
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
        path = str(diff.get("path", ""))
        if self.path_value(path):
            return {**diff, **{s: REDACTED if diff.get(s) is not None else None for s in sides}}
        if self.path_personal(path):
            masked = {s: None if diff.get(s) is None else self._personal_value(diff.get(s)) for s in sides}
            return {**diff, **masked}
        return {**diff, **{s: self.value(diff.get(s)) for s in sides}}
