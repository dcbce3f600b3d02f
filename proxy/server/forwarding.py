"""Header rewriting for the data path: hop-by-hop removal, X-Forwarded-*, Via, request id. No I/O.

Headers are lists of ``(name, value)`` bytes pairs exactly as parsed; each function makes one pass over
them (this runs once per request on the hot path). Framing headers are taken out and re-made by the
server, so a client can never smuggle a body past the gateway by naming them in ``Connection``.
"""

from __future__ import annotations

import binascii
import os
import re
import struct
from typing import Final

from proxy.http1.headers import Headers, lower_name, may_name, name_sieve, same_pairs
from proxy.server.config import GatewaySettings
from proxy.server.exchange import header_pairs

__all__ = [
    "DRY_RUN_HEADER",
    "HOP_BY_HOP",
    "Forwarder",
    "FramingError",
    "PlainMemo",
    "PreparedRequest",
    "PreparedResponse",
    "header_pairs",
    "new_request_id",
    "valid_host",
    "valid_request_id",
]

HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    )
)
_FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"))
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# The dry-run signature header (proxy.shadow.dryrun.HEADER, which this layer cannot import): only the
# gateway's own shadow replays may carry it, so a client's copy is never forwarded.
DRY_RUN_HEADER = b"x-strangler-dry-run"
# A Host value (RFC 9110 7.2): a reg-name or IPv4 address, or a bracketed IP literal, then an optional
# port. No userinfo, path, spaces or control bytes, so nothing odd reaches X-Forwarded-Host.
_HOST_RE = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")
_GOOD_HOSTS_MAX = 1024


class FramingError(ValueError):
    """The request's headers are ambiguous or invalid (answered 400; the connection is closed)."""


def valid_request_id(value: bytes) -> bool:
    """True for a sane client-sent request id: 1-128 characters of ``[A-Za-z0-9._-]``."""
    return _REQUEST_ID_RE.fullmatch(value) is not None


# Request ids are random version-4 UUIDs in their dashed form, the form the services make: a client
# cannot tell the gateway from the id, nor predict the next one. They are made in batches, with a few C
# calls whatever the batch size: one os.urandom; one hexlify with a dash after every 4 hex digits (counted
# from the right, which for whole ids is from the left too), so each id is 8 groups and a dash, 40 bytes;
# the version digit set, and the variant digit mapped onto 8, 9, a or b from a random hex digit's low two
# bits, for every id at once by stepped slices; the 4 dashes per id a UUID has not overwritten with "_"
# (never a hex digit) and deleted by one translate; one struct unpack into ids. Callgrind, per request:
# ~2,400 instructions for the former batch of 64 (struct-split into 320 groups, each id joined with
# dashes: small bytes objects made and freed), ~1,300 for this one at 64 ids, ~650 fewer again at 256;
# 1,024 gained nothing more. A forked child drops its inherited batch.
_ID_BATCH = 256
_ID_STRIDE = 40  # an id's 32 hex digits and 8 dashes, as hexlify(..., b"-", 2) lays them out
_ID_VERSION = b"4" * _ID_BATCH  # hex digit 12: group 3's first, at 3 * 5
_ID_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")  # hex digit 16, at 4 * 5: 10xx
_ID_CUTS = (4, 29, 34, 39)  # the dashes a UUID has not: inside its 8 and 12 digit groups, and after it
_ID_CUT = b"_" * _ID_BATCH
_ID_SPLIT = struct.Struct("36s" * _ID_BATCH).unpack
_ids: Final[list[bytes]] = []  # Final: the data path reaches the list itself, not the module dict


def _refill_ids() -> None:
    laid = bytearray(binascii.hexlify(os.urandom(16 * _ID_BATCH), b"-", 2))
    laid.append(0x2D)  # the last id's trailing dash, which hexlify does not write
    laid[15::_ID_STRIDE] = _ID_VERSION
    laid[20::_ID_STRIDE] = laid[20::_ID_STRIDE].translate(_ID_VARIANT)
    for at in _ID_CUTS:
        laid[at::_ID_STRIDE] = _ID_CUT
    _ids.extend(_ID_SPLIT(laid.translate(None, b"_")))


os.register_at_fork(after_in_child=_ids.clear)


def new_request_id() -> bytes:
    """A fresh request id: a random version-4 UUID, dashed (``xxxxxxxx-xxxx-4xxx-[89ab]xxx-...``)."""
    if not _ids:
        _refill_ids()
    return _ids.pop()


def valid_host(value: bytes) -> bool:
    """True for a Host (or X-Forwarded-Host) value the gateway forwards: ``host[:port]``, nothing else."""
    return _HOST_RE.fullmatch(value) is not None


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


class PreparedRequest:
    """The outcome of `Forwarder.request`: the header lines to send upstream, how the body is framed."""

    __slots__ = (
        "block", "chunked", "content_length", "host", "id_line", "lines", "loop", "request_id", "websocket",
    )  # fmt: skip

    def __init__(
        self,
        lines: list[bytes],
        content_length: int | None,
        chunked: bool,
        request_id: bytes,
        websocket: bool,
        loop: bool,
        host: bytes | None = None,
        block: bytes = b"",
    ) -> None:
        self.lines = lines  # b"Name: value", ready to join with CRLF; the request id's line is the last
        self.block = block  # the lines joined by CRLF when made already (`request_plain`), else b""
        self.id_line = lines[-1] if lines else b""  # the response carries the same line back to the client
        self.host = host  # the client's Host (None for an HTTP/1.0 request without one): sent upstream
        self.content_length = content_length
        self.chunked = chunked
        self.request_id = request_id
        self.websocket = websocket
        self.loop = loop

    def pairs(self) -> Headers:
        """The forwarded headers as (name, value) pairs."""
        return header_pairs(self.lines)


class PreparedResponse:
    """The outcome of `Forwarder.response`: end-to-end headers and the upstream's framing."""

    __slots__ = ("chunked", "content_length", "headers")

    def __init__(self, headers: Headers, content_length: bytes | None, chunked: bool) -> None:
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked


class PlainMemo:
    """A client connection's last plain request: its raw headers and what `Forwarder.request_plain` made.

    A keep-alive client (a service's HTTP client, a browser tab, a load generator) usually sends the same
    headers with every request; then only the request id's line is new. Headers that change per request
    (a trace id, say) cost one failed comparison, which stops at the first header that differs.
    """

    __slots__ = ("block", "host", "lines", "raw")

    def __init__(self) -> None:
        self.raw: Headers | None = None  # the client's header list (a new list per request, never changed)
        self.lines: list[bytes] = []  # the forwarded lines without the request id's
        self.block = b""  # those lines joined by CRLF; b"": not kept (the headers came once so far)
        self.host = b""


class Forwarder:
    """Applies one `GatewaySettings` to request and response headers (precomputed bytes)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.trusted_hops = settings.trusted_hops
        self.scheme = settings.scheme.encode("ascii")
        self.via_token = settings.via_token.lower().encode("ascii")
        self.via_entry = b"1.1 " + settings.via_token.encode("ascii")
        self.request_id_name = settings.request_id_header.encode("ascii")
        self.request_id_prefix = self.request_id_name + b": "
        self.via_line = b"Via: " + self.via_entry
        self.proto_line = b"X-Forwarded-Proto: " + self.scheme
        rid = self.request_id_name.lower()
        self._request_special = (
            HOP_BY_HOP | _FORWARDING | {b"host", b"content-length", b"via", rid, DRY_RUN_HEADER}
        )
        self._request_sieve = name_sieve(self._request_special)  # most names skip the look-up
        # Host values already found valid: hosts repeat, so the plain path pays a set lookup, not a regex.
        self._good_hosts: set[bytes] = set()
        self._last_host = b""  # the last Host found good: most requests name the same one (no hashing)
        self._response_drop = HOP_BY_HOP | {rid}
        self._response_sieve = name_sieve(self._response_drop | {b"content-length"})
        self.request_id_lower = rid

    def _good_host(self, host: bytes) -> bool:
        """Whether ``host`` is a Host to forward: the last good one (compared, not hashed), one seen good,
        or one that passes `_vet_host` now."""
        if host == self._last_host:
            return True
        if host in self._good_hosts:
            self._last_host = host
            return True
        return self._vet_host(host)

    def _vet_host(self, host: bytes) -> bool:
        """Validate a Host value not seen before; remember it when valid (hosts repeat)."""
        if not valid_host(host):
            return False
        if len(self._good_hosts) >= _GOOD_HOSTS_MAX:
            self._good_hosts.clear()  # bounded: a client sending ever-new hosts cannot grow it
        self._good_hosts.add(host)
        self._last_host = host
        return True

    def request_plain(
        self, raw: Headers, peer: bytes, memo: PlainMemo | None = None
    ) -> PreparedRequest | None:
        """`request` for the common case, or None when it does not apply (then call `request`).

        The common case: one non-empty Host and otherwise only ordinary headers (nothing hop-by-hop,
        framing, forwarding or a request id), with ``trusted_hops`` 0. Such a request carries no
        ``Connection`` header, which lets the server infer HTTP/1.1 from llhttp's keep-alive verdict.

        ``memo`` is the client connection's (``peer`` is always the same there): a request whose headers
        are byte for byte the last plain request's gets that one's lines and joined block again, with a
        new request id, instead of every line being sieved, made and joined anew. The lines are kept only
        once headers have come twice in a row: a client whose headers change with every request pays the
        comparison, not the keeping.
        """
        if self.trusted_hops:
            return None
        keep = False
        if memo is not None:
            last = memo.raw
            if last is not None and same_pairs(raw, last):
                if memo.block:  # kept: only the request id's line is new
                    return self._kept(memo)
                keep = True  # the second time in a row: keep what this request makes
        special = self._request_special
        sieve = self._request_sieve
        lines: list[bytes] = []
        host: bytes | None = None
        for name, value in raw:
            # b"%b: %b" % (...) compiles to one copy into a new bytes; b": ".join costs ~3 times as much.
            if not may_name(sieve, name):
                lines.append(b"%b: %b" % (name, value))
                continue
            if name == b"Host" and host is None:  # as clients spell it: no look-up
                host = value
                continue
            lname = lower_name(name)
            if lname not in special:
                lines.append(b"%b: %b" % (name, value))
            elif lname == b"host" and host is None:
                host = value
            else:
                return None
        if not host or not self._good_host(host):
            return None  # `request` refuses it with the reason
        lines.append(b"X-Forwarded-For: %b" % peer)
        lines.append(self.proto_line)
        lines.append(b"X-Forwarded-Host: %b" % host)
        lines.append(self.via_line)
        if keep:
            assert memo is not None
            # Kept without the id line (the memo's list is never changed: each request gets a copy).
            memo.lines = lines
            memo.block = b"\r\n".join(lines)
            memo.host = host
            return self._kept(memo)
        if memo is not None:  # remembered, to be recognised should the next request repeat them
            memo.raw = raw
            memo.block = b""
        # _plain, inlined with new_request_id: two calls fewer on the common request's path.
        if not _ids:
            _refill_ids()
        request_id = _ids.pop()
        lines.append(b"%b%b" % (self.request_id_prefix, request_id))
        return PreparedRequest(lines, None, False, request_id, False, False, host)

    def _kept(self, memo: PlainMemo) -> PreparedRequest:
        """A plain request from the lines ``memo`` keeps, with a new request id (its line the last)."""
        if not _ids:
            _refill_ids()
        request_id = _ids.pop()
        id_line = b"%b%b" % (self.request_id_prefix, request_id)
        return PreparedRequest(
            [*memo.lines, id_line], None, False, request_id, False, False, memo.host,
            b"%b\r\n%b" % (memo.block, id_line),
        )  # fmt: skip

    def _plain(self, lines: list[bytes], host: bytes, peer: bytes) -> PreparedRequest:
        # Nothing to check or merge: the forwarding headers are ours alone (inlined in request_plain).
        request_id = new_request_id()
        lines += (
            b"X-Forwarded-For: " + peer,
            self.proto_line,
            b"X-Forwarded-Host: " + host,
            self.via_line,
            self.request_id_prefix + request_id,
        )
        return PreparedRequest(lines, None, False, request_id, False, False, host)

    def request(self, raw: Headers, peer: bytes, http11: bool) -> PreparedRequest:
        """Rewrite a client's headers for the upstream; raise `FramingError` if they are ambiguous.

        Returned lines exclude Host (kept as ``host``) and framing (the server adds them) and end with the
        forwarding headers: X-Forwarded-For/-Proto/-Host, Via and the request id.
        """
        special = self._request_special
        lines: list[bytes] = []
        host: bytes | None = None
        rare: Headers | None = None
        sieve = self._request_sieve
        for name, value in raw:  # the common case: ordinary headers and one Host
            if not may_name(sieve, name):
                lines.append(b"%b: %b" % (name, value))
                continue
            lname = lower_name(name)
            if lname not in special:
                lines.append(b"%b: %b" % (name, value))
            elif lname == b"host" and host is None:
                host = value
            else:
                if rare is None:
                    rare = []
                rare.append((lname, value))

        if host and not self._good_host(host):
            raise FramingError(
                "the Host header is not a valid host[:port] (no spaces, '@', '/' or control bytes)"
            )
        if rare is None and host and not self.trusted_hops:
            return self._plain(lines, host, peer)
        content_length: int | None = None
        chunked = websocket = loop = False
        request_id: bytes | None = None
        via: list[bytes] = []
        xff: list[bytes] = []
        xfp: bytes | None = None
        xfh: bytes | None = None
        forwarded: list[bytes] = []
        if rare is not None:
            lengths: list[bytes] = []
            encodings: list[bytes] = []
            connection: list[bytes] = []
            upgrade: bytes | None = None
            for lname, value in rare:
                if lname == b"host":
                    raise FramingError("the request has more than one Host header")
                if lname == b"content-length":
                    lengths.append(value)
                elif lname == b"transfer-encoding":
                    encodings.append(value)
                elif lname == b"connection":
                    connection.extend(_tokens(value))
                elif lname == b"upgrade":
                    upgrade = value
                elif lname == b"via":
                    via.append(value)
                elif lname == self.request_id_lower:
                    request_id = value
                elif lname == b"x-forwarded-for":
                    xff.append(value)
                elif lname == b"x-forwarded-proto":
                    xfp = value
                elif lname == b"x-forwarded-host":
                    xfh = value
                elif lname == b"forwarded":
                    forwarded.append(value)
                # anything else in `special` is hop-by-hop: dropped
            if lengths:
                if len(lengths) > 1:
                    raise FramingError("the request has more than one Content-Length header")
                if not lengths[0].isdigit():
                    raise FramingError("the request's Content-Length is not a number")
                content_length = int(lengths[0])
            if encodings:
                if len(encodings) > 1 or encodings[0].strip().lower() != b"chunked":
                    raise FramingError("Transfer-Encoding must be exactly 'chunked'")
                if content_length is not None:
                    raise FramingError("the request has both Content-Length and Transfer-Encoding")
                chunked = True
            if connection:
                # Headers the client declared hop-by-hop; framing and forwarding headers are ours anyway.
                named = frozenset(connection)
                lines = [line for line in lines if line.partition(b":")[0].lower() not in named]
            websocket = (
                upgrade is not None and upgrade.strip().lower() == b"websocket" and b"upgrade" in connection
            )
            for value in via:
                for entry in value.split(b","):
                    parts = entry.split()
                    if len(parts) >= 2 and parts[1].lower() == self.via_token:
                        loop = True
        if not host and http11:
            raise FramingError("an HTTP/1.1 request must carry a non-empty Host header")

        if request_id is None or not valid_request_id(request_id):
            request_id = new_request_id()

        hops = self.trusted_hops
        if hops:
            chain = [e.strip() for v in xff for e in v.split(b",") if e.strip()][-hops:]
            chain.append(peer)
            lines.append(b"X-Forwarded-For: " + b", ".join(chain))
            lines.append(b"X-Forwarded-Proto: " + (xfp.split(b",")[-1].strip() if xfp else self.scheme))
            out_xfh = xfh.split(b",")[-1].strip() if xfh else host
            if out_xfh and not valid_host(out_xfh):
                raise FramingError("the X-Forwarded-Host header is not a valid host[:port]")
            for value in forwarded:
                lines.append(b"Forwarded: " + value)
        else:
            lines.append(b"X-Forwarded-For: " + peer)
            lines.append(self.proto_line)
            out_xfh = host
        if out_xfh:
            lines.append(b"X-Forwarded-Host: " + out_xfh)
        if via:
            via.append(self.via_entry)
            lines.append(b"Via: " + b", ".join(via))
        else:
            lines.append(self.via_line)
        lines.append(self.request_id_prefix + request_id)
        return PreparedRequest(lines, content_length, chunked, request_id, websocket, loop, host)

    def response(self, raw: Headers) -> PreparedResponse:
        """Drop hop-by-hop headers (and any named in ``Connection``) and the upstream's request id."""
        lines, length, chunked = self.response_lines(raw)
        headers: Headers = []
        for line in lines:
            name, _, value = line.partition(b": ")
            headers.append((name, value))
        return PreparedResponse(headers, length, chunked)

    def response_lines(self, raw: Headers) -> tuple[list[bytes], bytes | None, bool]:
        """Like `response`, but the kept headers come as ``b"Name: value"`` lines (the hot path's form).

        Returns (lines, Content-Length value or None, whether the upstream's body was chunked).
        """
        drop = self._response_drop
        lines: list[bytes] = []
        length: bytes | None = None
        chunked = False
        connection: list[bytes] | None = None
        sieve = self._response_sieve
        for name, value in raw:
            if not may_name(sieve, name):
                lines.append(b"%b: %b" % (name, value))
                continue
            if name == b"Content-Length":  # as servers spell it: no look-up
                length = value
                continue
            lname = lower_name(name)
            if lname in drop:
                # Node's "keep-alive" (on every response) names only Keep-Alive, dropped anyway: no parse.
                if lname == b"connection" and value != b"keep-alive":
                    named = _tokens(value)  # every Connection header counts, as in a request
                    connection = named if connection is None else connection + named
                elif lname == b"transfer-encoding":
                    chunked = True
            elif lname == b"content-length":
                length = value
            else:
                lines.append(b"%b: %b" % (name, value))
        if connection:
            hop = frozenset(connection) - drop  # the hop-by-hop ones are gone already
            if hop:
                lines = [line for line in lines if line.partition(b":")[0].lower() not in hop]
        return lines, length, chunked
