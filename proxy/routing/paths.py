"""Canonicalise a request target so the gateway routes on exactly the path it forwards.

The gateway sits in front of two backends that parse paths differently (Express and aiohttp). A path
that one side reads as ``/admin`` and the other as something else would let a client pick its backend
behind the routing table's back. So the gateway accepts one canonical spelling, refuses everything
that could be read two ways, and forwards the canonical form unchanged. The policy:

* **Origin-form only.** The target must start with ``/``. Absolute-form (``http://host/p``), authority
  form and ``*`` are refused.
* **Bytes.** Every byte must be printable ASCII (0x21-0x7E). Space, control characters (including
  DEL) and non-ASCII bytes are refused, in the path and in the query. ``#`` is refused anywhere (a
  fragment is never sent by a client; a raw ``#`` is ambiguous). A backslash is refused in the path
  (some stacks treat it as ``/``).
* **Percent escapes.** ``%`` must be followed by two hex digits. Escapes are never decoded, only
  their hex is upper-cased (``%c3%a9`` -> ``%C3%A9``, ``%75`` stays ``%75``). Express compares literal
  route segments undecoded and decodes only parameters, and so does the routing table: ``/api/v1/%75sers/1``
  is not the ``users`` route for either of them, while ``/api/v1/users/%31`` is user 1 for both backends.
  Refused: ``%2F`` (encoded slash: one backend would split on it, the other not), ``%5C`` (encoded
  backslash) and encoded control characters (``%00``-``%1F``, ``%7F``).
* **Segments.** ``.`` and ``..`` segments are refused, raw or encoded (``/%2e%2e/``), never resolved.
  Empty segments are refused (``//``, a leading ``//``); one trailing slash is kept
  (routing ignores it, see ``routes.RouteTable.match``). ``/`` alone is the root.
* **Kept as they are.** Case (routing compares literal segments case-insensitively, but parameters and
  the default route keep what the client sent); ``;`` is an ordinary character (Express 5 and aiohttp
  both treat it literally, neither strips matrix parameters); the query string (after the first
  ``?``) is passed through byte for byte, only the byte rules above apply to it.

``canonicalise(b"/API/v1/users/1/")`` is ``("/API/v1/users/1/", "")``: the routing table then treats it
as ``/api/v1/users/1`` (as Express does) and forwards the template's spelling.
"""

from __future__ import annotations

import re

__all__ = ["BadPath", "canonicalise"]


class BadPath(ValueError):
    """The request target is refused; ``reason`` says why (sent back as a 400 ``bad_request``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# Anything outside printable ASCII, plus '#', in the whole target.
_BAD_BYTE = re.compile(rb"[^\x21-\x7e]|#")
_ESCAPE = re.compile(r"%(..)?", re.DOTALL)
_HEX = frozenset("0123456789abcdefABCDEF")


def _describe(byte: int) -> str:
    if byte == 0x23:
        return "'#' (a fragment is never sent to a server; encode it as %23)"
    if byte == 0x20:
        return "a space (encode it as %20)"
    if byte >= 0x80:
        return f"a non-ASCII byte 0x{byte:02X} (percent-encode it)"
    return f"a control character 0x{byte:02X}"


def _unescape(match: re.Match[str]) -> str:
    digits = match.group(1)
    if digits is None or digits[0] not in _HEX or digits[1] not in _HEX:
        raise BadPath(
            f"invalid percent-escape {match.group(0)!r} in the path: '%' must be followed by two hex digits"
        )
    code = int(digits, 16)
    if code == 0x2F:
        raise BadPath(
            "encoded slash %2F in the path is refused: backends disagree on whether it splits a segment"
        )
    if code == 0x5C:
        raise BadPath("encoded backslash %5C in the path is refused: some backends read it as '/'")
    if code < 0x20 or code == 0x7F:
        raise BadPath(f"encoded control character %{code:02X} in the path is refused")
    return "%" + digits.upper()


def canonicalise(target: bytes) -> tuple[str, str]:
    """Return ``(path, query)`` (query without the ``?``) for an origin-form target or raise BadPath.

    The returned path is canonical: ``canonicalise(path.encode())`` returns it unchanged.
    """
    if not target.startswith(b"/"):
        if target == b"*":
            raise BadPath("the asterisk-form target '*' is not supported (OPTIONS * is not routed)")
        if b"://" in target:
            raise BadPath("absolute-form targets (http://host/path) are refused: send the path only")
        raise BadPath("the request target must start with '/'")
    bad = _BAD_BYTE.search(target)
    if bad is not None:
        raise BadPath(f"the request target contains {_describe(target[bad.start()])}")
    # Printable ASCII only from here on, so decoding cannot fail.
    text = target.decode("ascii")
    path, _, query = text.partition("?")
    if "\\" in path:
        raise BadPath("a backslash in the path is refused: some backends read it as '/'")
    if "%" in path:
        path = _ESCAPE.sub(_unescape, path)
    if len(path) > 1:
        _check_segments(path)
    return path, query


def _check_segments(path: str) -> None:
    # Fast path: no '//' and no segment starting with '.' means nothing to refuse.
    if "//" in path:
        raise BadPath("empty path segments ('//') are refused: backends disagree on whether to merge them")
    if "/." not in path and "%2E" not in path:
        return
    for segment in path.split("/"):
        if segment.replace("%2E", ".") in (".", ".."):
            raise BadPath(f"dot segment {segment!r} in the path is refused (raw or percent-encoded)")
