"""The shared header rules (`proxy.http1.headers`): framing detection and header-line splitting."""

from __future__ import annotations

import pytest

from proxy.http1.headers import declares_length, header_pairs, is_chunked


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
