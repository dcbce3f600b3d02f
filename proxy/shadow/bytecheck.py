"""The byte check: whether two raw responses surely agree under a route's rules, without parsing. Pure.

Most shadowed responses are byte for byte what the other side sent; checking status, the compared
headers' raw values and the body bytes settles those without decoding or parsing anything
(``proxy.shadow.compare`` does the full comparison when this check says "not known").
"""

from __future__ import annotations

import functools
import operator
from typing import Final

from proxy.http1.headers import Headers, lower_name, same_pairs
from proxy.routing.table import CompareRules

__all__ = ["identical", "identity_headers", "name_lengths", "same_headers"]


def identical(
    control: tuple[int, Headers, bytes, float | None],
    candidate: tuple[int, Headers, bytes, float | None],
    rules: CompareRules,
    body_cap: int = 1 << 20,
    names: frozenset[bytes] | None = None,
) -> bool:
    """Whether two raw responses (status, headers, body, seconds) surely agree under ``rules``.

    True only for the same status, the same raw values of every compared header and the same body bytes
    (within ``body_cap``): then `compare` would return None too, without parsing anything. False means
    "not known": call `compare`. ``names`` is ``identity_headers(rules)`` when the caller keeps it.
    """
    if control[0] != candidate[0] or control[2] != candidate[2] or len(control[2]) > body_cap:
        return False
    if names is None:
        names = identity_headers(rules)
    return same_headers(control[1], candidate[1], names)


def same_headers(
    control: Headers, candidate: Headers, names: frozenset[bytes], lengths: int = -1
) -> bool:
    """Whether the two header lists carry the same values for ``names`` (lower-case), in the same order.

    ``lengths`` is ``name_lengths(names)``: a name of another length is not looked up (most of a
    response's headers, and each look-up hashes a new bytes object); -1 looks every one up.
    Called for every compared shadow response: plain loops over lists (compiled, a native iteration with
    the pairs unpacked in place, where a ``Sequence`` went through the iterator protocol), no
    comprehension or helper frames. Two identical lists (the same side asked twice, or two services that
    send the same headers) are settled by one native comparison, which stops early when they differ.
    """
    if same_pairs(control, candidate):
        return True
    a: list[bytes] = []  # name, value, name, value, ...: no pair made while scanning
    for k, v in control:
        if (lengths >> min(len(k), _LONG)) & 1:
            lk = lower_name(k)
            if lk in names:
                a.append(lk)
                a.append(v)
    b: list[bytes] = []
    for k, v in candidate:
        if (lengths >> min(len(k), _LONG)) & 1:
            lk = lower_name(k)
            if lk in names:
                b.append(lk)
                b.append(v)
    if len(a) != len(b):
        return False
    if len(a) > 2:  # several compared headers: by name (stable: values of one name keep their order)
        pairs_a = sorted(zip(a[::2], a[1::2], strict=True), key=_first)
        return pairs_a == sorted(zip(b[::2], b[1::2], strict=True), key=_first)
    return a == b


def name_lengths(names: frozenset[bytes]) -> int:
    """A bit for the length of each of ``names`` (one bit for every length from ``_LONG`` up): the mask
    `same_headers` filters by. It stays a small int (compiled, native arithmetic)."""
    mask = 0
    for name in names:
        mask |= 1 << min(len(name), _LONG)
    return mask


@functools.lru_cache(maxsize=1024)
def identity_headers(rules: CompareRules) -> frozenset[bytes]:
    """The lower-case header names `identical` checks: the compared ones and Content-Encoding.

    The same bytes under different encodings decode differently, so the encoding must match as well.
    """
    return frozenset({b"content-encoding", *(h.lower().encode("latin-1") for h in rules.headers)})


_first = operator.itemgetter(0)
_LONG: Final = 61  # the mask's last bit: names this long or longer share it
