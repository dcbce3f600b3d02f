"""Response compression, chosen exactly as the legacy app's ``compression`` middleware chooses it.

Every JSON response gets ``Vary: Accept-Encoding``; one whose body has at least
``COMPRESSION_THRESHOLD`` bytes, answering anything but HEAD, is compressed with the coding
:func:`negotiate` picks from ``Accept-Encoding`` (the ``negotiator`` 0.6 algorithm with br and gzip
preferred on equal quality). gzip and deflate use aiohttp's own compression; aiohttp has no brotli
encoder, so br bodies are compressed here, at the quality the Node middleware uses (4).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import brotli  # type: ignore[import-untyped]  # Brotli ships no type information
from aiohttp import web
from aiohttp.web_response import ContentCoding

SUPPORTED = ("br", "gzip", "deflate", "identity")
PREFERRED = ("br", "gzip")
BROTLI_QUALITY = 4
_ENCODING_RE = re.compile(r"^\s*([^\s;]+)\s*(?:;(.*))?$")
_JS_FLOAT_RE = re.compile(r"\s*([+-]?(?:Infinity|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))")
_NO_TRANSFORM_RE = re.compile(r"(?:^|,)\s*?no-transform\s*?(?:,|$)", re.IGNORECASE)
_JSON_TYPE = re.compile(r"application/json\b", re.IGNORECASE)
_CODINGS = {"gzip": ContentCoding.gzip, "deflate": ContentCoding.deflate}


@dataclass(frozen=True, slots=True)
class _Spec:
    encoding: str
    q: float
    i: int  # position in the header (or in SUPPORTED, for a priority)
    o: int = -1  # position of the header entry a priority came from
    s: int = 0  # 1: named exactly, 0: matched by "*"


def _js_float(text: str) -> float:
    """JavaScript's parseFloat: the longest numeric prefix, NaN when there is none."""
    match = _JS_FLOAT_RE.match(text)
    return float(match[1].replace("Infinity", "inf")) if match else float("nan")


def _js_or(*values: float) -> float:
    """JavaScript's ``a || b || c`` on numbers: the first that is neither 0 nor NaN, else the last."""
    for value in values[:-1]:
        if value and value == value:
            return value
    return values[-1]


def _parse(header: str) -> list[_Spec]:
    accepts: list[_Spec] = []
    has_identity = False
    min_quality = 1.0
    parts = header.split(",")
    for i, part in enumerate(parts):
        match = _ENCODING_RE.match(part.strip())
        if match is None:
            continue
        q = 1.0
        for param in match[2].split(";") if match[2] else ():
            key, _, value = param.strip().partition("=")
            if key == "q":
                q = _js_float(value.split("=")[0])
                break
        spec = _Spec(match[1], q, i)
        accepts.append(spec)
        has_identity = has_identity or _specify("identity", spec, 0) is not None
        min_quality = min(min_quality, _js_or(q, 1.0))
    if not has_identity:
        accepts.append(_Spec("identity", min_quality, len(parts)))
    return accepts


def _specify(encoding: str, spec: _Spec, index: int) -> _Spec | None:
    if spec.encoding.lower() == encoding.lower():
        s = 1
    elif spec.encoding == "*":
        s = 0
    else:
        return None
    return _Spec(encoding, spec.q, index, spec.i, s)


def _priority(encoding: str, accepted: list[_Spec], index: int) -> _Spec:
    best = _Spec(encoding, 0.0, index, -1, 0)
    for spec in accepted:
        found = _specify(encoding, spec, index)
        if found is None:
            continue
        if _js_or(best.s - found.s, best.q - found.q, best.o - found.o) < 0:
            best = found
    return best


def _compare(a: _Spec, b: _Spec) -> int:
    if a.q != b.q:
        return -1 if a.q > b.q else 1  # higher quality first (b.q - a.q in JS)
    a_pref = PREFERRED.index(a.encoding) if a.encoding in PREFERRED else -1
    b_pref = PREFERRED.index(b.encoding) if b.encoding in PREFERRED else -1
    if a_pref == -1 and b_pref == -1:
        return (b.s - a.s) or (a.o - b.o) or (a.i - b.i)  # all ints
    if a_pref != -1 and b_pref != -1:
        return a_pref - b_pref
    return 1 if a_pref == -1 else -1


@functools.lru_cache(maxsize=256)
def negotiate(accept_encoding: str | None) -> str | None:
    """The content coding for an Accept-Encoding value; "identity" without the header, None if none fits."""
    if accept_encoding is None:
        return "identity"
    accepted = _parse(accept_encoding)
    ranked = [p for p in (_priority(e, accepted, i) for i, e in enumerate(SUPPORTED)) if p.q > 0]
    ranked.sort(key=functools.cmp_to_key(_compare))  # stable, like V8's sort
    return ranked[0].encoding if ranked else None


def _append_vary(response: web.StreamResponse, field: str) -> None:
    current = response.headers.get("Vary")
    if current is None:
        response.headers["Vary"] = field
    elif current.strip() != "*" and field.lower() not in (v.strip().lower() for v in current.split(",")):
        response.headers["Vary"] = f"{current}, {field}"


def compress(request: web.Request, response: web.Response, threshold: int) -> None:
    """Add Vary and, when it applies, the negotiated compression to a JSON response (in place)."""
    if not _JSON_TYPE.match(response.headers.get("Content-Type", "")):
        # 204, 304 and preflights carry no content type, and only JSON is compressed (never a stream).
        return
    if _NO_TRANSFORM_RE.search(response.headers.get("Cache-Control", "")):
        return
    _append_vary(response, "Accept-Encoding")
    body = response.body
    if not isinstance(body, bytes) or len(body) < threshold or request.method == "HEAD":
        return
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return
    accept = request.headers.getall("Accept-Encoding", None)
    coding = negotiate(None if accept is None else ", ".join(accept))
    if coding == "br":
        response.body = brotli.compress(body, quality=BROTLI_QUALITY)
        response.headers["Content-Encoding"] = "br"
    elif coding in _CODINGS:
        response.enable_compression(force=_CODINGS[coding])
