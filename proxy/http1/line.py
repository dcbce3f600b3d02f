"""The request line of the common request, read without the parser. No I/O.

`origin_line` accepts a narrow subset of what llhttp accepts as a request line (a known method, an
origin-form target of visible ASCII without a fragment, HTTP/1.1) and gives what llhttp would: the method
and the target. Anything else is None, and the caller hands the bytes to llhttp, which decides. It lets a
client connection skip the parser for a head it has seen before but for its request line
(`proxy.server.connection`): tests hold it to llhttp's verdict byte by byte.
"""

from __future__ import annotations

from typing import Final

__all__ = ["origin_line"]

# The methods llhttp knows that a plain request uses; CONNECT (a tunnel, llhttp's upgrade) is not one.
_METHODS: Final[dict[bytes, bytes]] = {
    m: m for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
}
_GET: Final = b"GET"
_VERSION: Final = b" HTTP/1.1"
# Visible ASCII but "#" (a fragment: clients do not send one) map to themselves, every other byte to
# another: `bytes.translate` returns its very argument when nothing changed, so ``is`` tells.
_TARGET_BYTES: Final = bytes(range(0x21, 0x7F)).replace(b"#", b"")
_TARGET_TABLE: Final = bytes(i if i in _TARGET_BYTES else (i + 1) & 0xFF for i in range(256))


def origin_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(method, target) of the request line ``line`` (without its CRLF) when it is ``METHOD /target
    HTTP/1.1`` with a method of `_METHODS` and a target of visible ASCII without "#"; else None (llhttp's
    to judge)."""
    # Compiled, one-argument startswith/endswith are native; find, or a bound given to either, is a
    # method call by name (~1,200 instructions for endswith with bounds, ~100 for slicing the line).
    if not line.endswith(_VERSION):
        return None
    method = _GET
    start = 4
    if not line.startswith(b"GET /"):  # the common method, without slicing it out
        space = line.find(b" ")
        known = _METHODS.get(line[:space])
        if known is None or not line.startswith(b"/", space + 1):
            return None
        method = known
        start = space + 1
    target = line[start : len(line) - len(_VERSION)]
    if target.translate(_TARGET_TABLE) is not target:  # a byte outside the set (a space, a control...)
        return None
    return method, target
