"""The one `Headers` type of the gateway and the few header rules every HTTP/1.1 reader shares. No I/O.

Headers are lists of ``(name, value)`` bytes pairs exactly as received: names keep their case and
order, repeated names stay repeated. Functions here make one pass and lower-case only what they must.
"""

from __future__ import annotations

from typing import Final

__all__ = ["Headers", "declares_length", "header_pairs", "is_chunked", "lower_name"]

Headers = list[tuple[bytes, bytes]]

# Raw header name -> its lower-case form. Names arrive as fresh bytes, but a client or an upstream spells
# them the same way every time: a dict look-up (the name's hash) replaces bytes.lower's copy, the copy's
# hash and its freeing. Emptied when full, so ever-new names cost a lower() each, not memory.
_LOWER: Final[dict[bytes, bytes]] = {}
_LOWER_MAX: Final = 1024


def lower_name(name: bytes) -> bytes:
    """``name.lower()``, remembered (the same result, usually the same object as last time)."""
    lower = _LOWER.get(name)
    if lower is None:
        if len(_LOWER) >= _LOWER_MAX:
            _LOWER.clear()
        lower = _LOWER[name] = name.lower()
    return lower


def header_pairs(lines: list[bytes]) -> Headers:
    """Split ``b"Name: value"`` lines into (name, value) pairs."""
    pairs: Headers = []
    for line in lines:
        name, _, value = line.partition(b": ")
        pairs.append((name, value))
    return pairs


def is_chunked(value: bytes) -> bool:
    """Whether a Transfer-Encoding value makes the body chunked: ``chunked`` is its last coding."""
    return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


def declares_length(headers: Headers) -> bool:
    """Whether the headers delimit a body themselves (Content-Length, or chunked Transfer-Encoding).

    A response without either is delimited by the end of the connection (RFC 9112, 6.3).
    """
    for name, value in headers:
        size = len(name)  # a cheap filter before lower-casing: 14 and 17 are the framing names
        if size == 14 and name.lower() == b"content-length":
            return True
        if size == 17 and name.lower() == b"transfer-encoding" and is_chunked(value):
            return True
    return False
