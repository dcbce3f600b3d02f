"""The shared header rules (`proxy.http1.headers`): framing detection, header-line splitting, lower-cased
names."""

from __future__ import annotations

import pytest

from proxy.http1 import headers
from proxy.http1.headers import (
    declares_length,
    header_pairs,
    is_chunked,
    lower_name,
    may_name,
    name_sieve,
    same_pairs,
)


@pytest.mark.parametrize(
    ("value", "chunked"),
    [
        (b"chunked", True),
        (b"Chunked", True),
        (b"gzip, chunked", True),
        (b"gzip,chunked ", True),
        (b"chunked, gzip", False),
        (b"gzip", False),
        (b"", False),
    ],
)
def test_chunked_is_the_last_coding(value: bytes, chunked: bool) -> None:
    """A body is chunked when chunked is the last transfer coding, in any case (RFC 9112, 6.3)."""
    assert is_chunked(value) is chunked


@pytest.mark.parametrize(
    ("headers", "declared"),
    [
        ([(b"Content-Length", b"3")], True),
        ([(b"content-length", b"0")], True),
        ([(b"Transfer-Encoding", b"chunked")], True),
        ([(b"Transfer-Encoding", b"gzip")], False),
        ([(b"Content-Type", b"text/plain"), (b"Content-Lengths", b"3")], False),
        ([], False),
    ],
)
def test_declares_length(headers: list[tuple[bytes, bytes]], declared: bool) -> None:
    """Only Content-Length or a chunked coding delimit a body; anything else ends at the close."""
    assert declares_length(headers) is declared


def test_header_pairs_split_at_the_first_colon() -> None:
    """Header lines become (name, value) pairs; a value keeps its own colons."""
    assert header_pairs([b"X-A: 1", b"Link: <http://h/>"]) == [(b"X-A", b"1"), (b"Link", b"<http://h/>")]


def test_lower_name_is_bytes_lower_and_stays_bounded() -> None:
    """lower_name gives what bytes.lower gives, for a name seen again and for more names than it keeps."""
    names = [b"Content-Type", b"X-REQUEST-ID", b"etag", b"Content-Type", b"\xc4-Odd"]
    names += [f"X-Name-{i}".encode() for i in range(3000)]  # more than the memo holds
    # names sharing a slot of the front memo (length, first letter), alternating, in several cases
    names += [b"Accept-Encoding", b"Accept-Language", b"ACCEPT-ENCODING", b"Accept-Encoding"] * 3
    names += [b"Content-Type", b"CONTENT-TYPE", b"content-type", b"Content-Tipe", b"Content-Type"]
    names += [b"", b"X" * 63, b"x" * 64, b"X-" + b"Long" * 40, b"X" * 63]  # past the memo's slots
    assert [lower_name(n) for n in names] == [n.lower() for n in names]
    assert [lower_name(n) for n in names[:5]] == [n.lower() for n in names[:5]]
    assert len(headers._LOWER) <= headers._LOWER_MAX


def test_may_name_never_stops_a_listed_name() -> None:
    """The sieve passes every listed name in any case, and what it stops is none of them, ignoring case."""
    listed = frozenset(
        (b"host", b"te", b"connection", b"x-request-id", b"content-length", b"x-strangler-dry-run")
    )
    sieve = name_sieve(listed)
    spellings = [b"Host", b"HOST", b"host", b"hOsT", b"TE", b"Te", b"Connection", b"X-Request-ID",
                 b"CONTENT-LENGTH", b"X-Strangler-Dry-Run"]  # fmt: skip
    assert all(may_name(sieve, name) for name in spellings)
    others = [b"Accept", b"User-Agent", b"Content-Type", b"Cookie", b"X-Powered-By", b"Hostx", b"Hos",
              b"", b"-", b"X" * 200, b"\xff\xfe", b"1234", b"Connectio_", b"Content-Lengths"]  # fmt: skip
    others += [bytes([b]) * size for b in range(1, 256, 7) for size in (1, 2, 4, 12, 19, 20)]
    stopped = [name for name in others if not may_name(sieve, name)]
    assert all(name.lower() not in listed for name in stopped)
    # and it stops most: an ordinary request's names are not looked up
    assert {b"Accept", b"User-Agent", b"Content-Type", b"Cookie", b"", b"X" * 200} <= set(stopped)


def test_same_pairs_is_list_equality() -> None:
    """same_pairs agrees with == on header lists: order, case, repeats and length all count."""
    base = [(b"Host", b"h"), (b"Accept", b"*/*"), (b"Accept", b"x")]
    cases = [
        [],
        list(base),
        base[:2],
        [(b"host", b"h"), *base[1:]],  # a name's case
        [(b"Host", b"h "), *base[1:]],  # a value's byte
        [base[0], base[2], base[1]],  # order
        [*base, (b"X", b"")],
    ]
    for a in [*cases, base]:
        for b in cases:
            assert same_pairs(a, b) == (a == b), (a, b)
