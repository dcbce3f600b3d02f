"""The shared header rules (`proxy.http1.headers`): framing detection, header-line splitting, lower-cased
names."""

from __future__ import annotations

import pytest

from proxy.http1 import headers
from proxy.http1.headers import declares_length, header_pairs, is_chunked, lower_name


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
    assert [lower_name(n) for n in names] == [n.lower() for n in names]
    assert [lower_name(n) for n in names[:5]] == [n.lower() for n in names[:5]]
    assert len(headers._LOWER) <= headers._LOWER_MAX
