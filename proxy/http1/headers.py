"""The one `Headers` type of the gateway and the few header rules every HTTP/1.1 reader shares. No I/O.

Headers are lists of ``(name, value)`` bytes pairs exactly as received: names keep their case and
order, repeated names stay repeated. Functions here make one pass and lower-case only what they must.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "Headers",
    "declares_length",
    "header_pairs",
    "is_chunked",
    "lower_name",
    "may_name",
    "name_sieve",
    "same_pairs",
]

Headers = list[tuple[bytes, bytes]]

# Raw header name -> its lower-case form. Names arrive as fresh bytes, but a client or an upstream spells
# them the same way every time: a dict look-up (the name's hash) replaces bytes.lower's copy, the copy's
# hash and its freeing. Emptied when full, so ever-new names cost a lower() each, not memory.
_LOWER: Final[dict[bytes, bytes]] = {}
_LOWER_MAX: Final = 1024
# In front of it, the last (spelling, lower-case) seen per slot of (length, first byte's low 5 bits): a
# fresh name is compared with one spelling, without hashing it (~40 instructions compiled against ~450 for
# the dict's look-up). Names that share a slot (Accept-Encoding, Accept-Language) fall through to the dict.
# One tuple per slot, replaced whole: a reader never sees a spelling with another name's lower case.
_SLOT_LONG: Final = 64
_SEEN: Final[list[tuple[bytes, bytes]]] = [(b"", b"")] * (_SLOT_LONG << 5)


def lower_name(name: bytes) -> bytes:
    """``name.lower()``, remembered (the same result, usually the same object as last time)."""
    size = len(name)
    slot = -1
    if 0 < size < _SLOT_LONG:
        slot = (size << 5) | (name[0] & 31)
        seen = _SEEN[slot]
        if seen[0] == name:
            return seen[1]
    lower = _LOWER.get(name)
    if lower is None:
        if len(_LOWER) >= _LOWER_MAX:
            _LOWER.clear()
        lower = _LOWER[name] = name.lower()
    if slot >= 0:
        _SEEN[slot] = (name, lower)
    return lower


def name_sieve(names: frozenset[bytes] | set[bytes]) -> bytes:
    """A sieve for `may_name`: a byte per (length, first byte's low 5 bits) of the lower-case ``names``."""
    sieve = bytearray((max(len(name) for name in names) + 1) << 5)
    for name in names:
        sieve[(len(name) << 5) | (name[0] & 31)] = 1
    return bytes(sieve)


def may_name(sieve: bytes, name: bytes) -> bool:
    """False when ``name`` is, whatever its case, none of the names ``sieve`` was made of (`name_sieve`).

    Two byte reads instead of hashing a fresh name: a letter's low 5 bits are the same in either case, so a
    name equal to one of them ignoring case always passes; a name that passes is then looked up. A
    request's ordinary headers (Accept, User-Agent, Cookie...) and a response's Content-Type stop here.
    """
    size = len(name)
    return 0 < size and (size << 5) < len(sieve) and sieve[(size << 5) | (name[0] & 31)] != 0


def same_pairs(a: Headers, b: Headers) -> bool:
    """``a == b`` for two header lists, as a native loop: list equality goes through the generic rich
    comparison of each tuple and each bytes in it (callgrind, two headers: ~940 instructions, this ~440)."""
    if a is b:
        return True
    size = len(a)
    if size != len(b):
        return False
    for i in range(size):
        name, value = a[i]
        other_name, other_value = b[i]
        if name != other_name or value != other_value:
            return False
    return True


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
