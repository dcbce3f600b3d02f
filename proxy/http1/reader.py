"""The one HTTP/1.1 response reader: bytes in, events out, with every framing rule in one place. No I/O.

`ResponseReader` wraps httptools (llhttp, in C) and adds what llhttp leaves to its caller:

- **1xx interim** responses are reported apart (``on_resp_interim``) and the real head follows;
- **101 Switching Protocols** is accepted only when the request asked to upgrade (``upgrade_ok``) and
  the response names the new protocol (Upgrade); the bytes after its head are that protocol's (`feed`
  returns them);
- a response to **HEAD** has no body whatever its headers say (``is_head``): the message ends with its
  head. llhttp cannot be told so, hence HEAD requests are never pipelined: the bytes after such a head in
  the same read go to the parser it leaves (a fresh one reads the next read), which reports them as
  body with no sink (`UpConn` closes a connection whose upstream did so);
- a body with neither Content-Length nor chunked coding is **delimited by the close** (`ends_at_close`);
- **trailers** of a chunked body are dropped;
- llhttp itself applies Content-Length, chunked coding, no body for 1xx/204/304, keep-alive, and rejects
  **ambiguous framing** (Content-Length twice or with Transfer-Encoding, invalid lengths): all raise
  `ProtocolError`, the one protocol-error type.

`READ_PLAIN` (the compiled build's C module `proxy.http1._fastresp`; None in the pure-Python one) reads a
whole response of the commonest shape in one pass, and None for anything else: where a connection reads a
response from its first byte, it asks `READ_PLAIN` first and does with its reading what the callbacks
below would have done; whatever it does not take goes to llhttp. `SAME_AT` and `SAME_PLAIN` (the same
module's, None beside it) tell whether the next response is one known in advance, without reading it into
objects: its bytes exactly, or its status, body and some headers' values.

Events go out as method calls, not objects, because this runs for every forwarded request: a *sink*
(`ResponseEvents`) receives the interim, head and body events, and the subclass's `_message_end` the end
of each message, with its status, headers and keep-alive. The upstream connections (`UpConn`,
`PipeConn`) subclass the reader, so a parser callback reaches their sink without an extra call.
`EventReader` gives the same rules h11-style (`feed` returns a list of events) for tests and callers
off the data path.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Final, Generic, NamedTuple, TypeVar

import httptools

from proxy import compiled
from proxy.compiled import mypyc_attr
from proxy.http1.errors import ProtocolError
from proxy.http1.headers import Headers, declares_length

__all__ = [
    "READ_PLAIN",
    "SAME_AT",
    "SAME_PLAIN",
    "Body",
    "End",
    "Event",
    "EventReader",
    "Head",
    "Interim",
    "ResponseEvents",
    "ResponseReader",
    "protocol_error",
]


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; the buffered calls subclass it in Python
class ResponseEvents:
    """Receives the events of the responses a `ResponseReader` reads (the end goes to `_message_end`).

    A base class to subclass, not a Protocol: compiled code calls a Protocol's methods by name (~200
    instructions a call), a compiled base class's through its vtable, and a reader calls its sink a few
    times per response.
    """

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        raise NotImplementedError

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        raise NotImplementedError

    def on_resp_body(self, chunk: bytes) -> None:
        raise NotImplementedError


# (status, reason, headers, body, keep_alive, end) of the plain response at data[pos], or None.
ReadPlain = Callable[[bytes, int, int], "tuple[int, bytes, Headers, bytes, bool, int] | None"]


def _plain_reader() -> ReadPlain | None:
    """`proxy.http1._fastresp.read_plain` where the compiled build runs; None in the pure-Python one."""
    if not compiled.BUILD.compiled:
        return None
    from proxy.http1._fastresp import read_plain

    return read_plain


READ_PLAIN: Final = _plain_reader()

# Whether data[pos:] starts with expect, compared in place (no slice made).
SameAt = Callable[[bytes, int, bytes], bool]


def _same_at() -> SameAt | None:
    """`proxy.http1._fastresp.same_at` where the compiled build runs; None in the pure-Python one."""
    if not compiled.BUILD.compiled:
        return None
    from proxy.http1._fastresp import same_at

    return same_at


SAME_AT: Final = _same_at()

# The offset after the plain response at data[pos] when it has keep-alive, the status and body given and,
# for each of the names given (lower-case), the given headers' values in order; 0 when it is plain but not
# so; None when it is not plain: (data, pos, cap, status, body, names, headers).
SamePlain = Callable[[bytes, int, int, int, bytes, "tuple[bytes, ...]", Headers], "int | None"]


def _same_plain() -> SamePlain | None:
    """`proxy.http1._fastresp.same_plain` where the compiled build runs; None in the pure-Python one."""
    if not compiled.BUILD.compiled:
        return None
    from proxy.http1._fastresp import same_plain

    return same_plain


SAME_PLAIN: Final = _same_plain()


log = logging.getLogger("strangler.http1")


def protocol_error(exc: Exception) -> ProtocolError:
    """The `ProtocolError` for an exception met while a response was read: llhttp's own complaint, one of
    our rules raised in a callback (httptools wraps what a callback raises), or a callback's own failure,
    met on the llhttp path or the plain one (`READ_PLAIN`) alike. The last is the gateway's fault, not the
    upstream's: logged with its traceback and named by its type only (the text reaches the client's 502)."""
    inner = exc.__context__ if isinstance(exc, httptools.HttpParserError) else exc
    if isinstance(inner, ProtocolError):
        return inner
    if not isinstance(inner, Exception):  # llhttp's own: the bytes broke HTTP/1.1
        return ProtocolError(str(exc) or type(exc).__name__)
    log.error("a callback failed while a response was read", exc_info=inner)
    return ProtocolError(f"the gateway failed while reading it ({type(inner).__name__})")


SinkT = TypeVar("SinkT", bound=ResponseEvents)


class ResponseReader(abc.ABC, Generic[SinkT]):
    """Reads the responses of one connection, in order; the subclass handles each message's end.

    State a subclass sets per request: ``sink`` (None: events are dropped, the message still ends),
    ``is_head`` and ``upgrade_ok``. State it may read: ``status``, ``reason`` and ``headers`` of the
    response being read, ``got_head`` (its final head has arrived), ``tunnel`` (a 101 was accepted).
    """

    __slots__ = (
        "_feed",
        "_keep_alive",
        "_status_code",
        "got_head",
        "headers",
        "in_interim",
        "is_head",
        "parser",
        "reason",
        "sink",
        "status",
        "tunnel",
        "upgrade_ok",
    )

    parser: httptools.HttpResponseParser
    _feed: Callable[[bytes], None]
    _keep_alive: Callable[[], bool]
    _status_code: Callable[[], int]

    def __init__(self) -> None:
        self._new_parser()
        self.sink: SinkT | None = None
        self.headers: Headers = []
        self.reason = b""
        self.status = 0
        self.got_head = False
        self.in_interim = False
        self.is_head = False
        self.upgrade_ok = False
        self.tunnel = False

    def _new_parser(self) -> None:
        """A fresh parser, and its three methods a response calls, bound once: compiled code calls a method
        of an object it does not own by name (a type look-up each time), a bound one it holds directly."""
        parser = self.parser = httptools.HttpResponseParser(self)
        self._feed = parser.feed_data
        self._keep_alive = parser.should_keep_alive
        self._status_code = parser.get_status_code

    @abc.abstractmethod
    def _message_end(self, status: int, headers: Headers, keep_alive: bool) -> None:
        """One final response is complete; the reader is ready for the next one."""

    def feed(self, data: bytes) -> bytes | None:
        """Parse bytes; return the bytes that follow an accepted 101 head, else None.

        Raises `ProtocolError`. (The connections inline these lines: one call less per read.)
        """
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as e:
            return data[e.args[0] :]
        except httptools.HttpParserError as e:
            raise protocol_error(e) from None
        return None

    def ends_at_close(self) -> bool:
        """Whether the response being read ends with the connection (a body without framing headers).

        Asked only when the connection closes mid-response, so the hot path never scans for framing.
        """
        if not self.got_head or self.tunnel or self.is_head:
            return False
        status = self.status
        return status >= 200 and status not in (204, 304) and not declares_length(self.headers)

    # --- httptools callbacks (no on_message_begin here: the end of each message resets the head; the
    # connections have one to tell a response that should not be there)
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.got_head:  # after the head: trailers, which are dropped
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._status_code()
        if (status < 200 or status == 101) and self._not_final(status):
            return
        # A final head: the common path, kept short (it runs for every response).
        self.got_head = True
        self.status = status
        sink = self.sink
        if sink is not None:
            sink.on_resp_head(status, self.reason, self.headers)
        if self.is_head and self.sink is sink and status != 101:
            # llhttp cannot be told "no body follows" from Python: end the message by hand.
            keep_alive = self._keep_alive()
            self._new_parser()
            headers = self.headers
            self.headers = []
            self.reason = b""
            self.got_head = False
            self._message_end(status, headers, keep_alive)

    def _not_final(self, status: int) -> bool:
        """The rules for a 1xx head: True for an interim response (reported; the real head follows)."""
        if status == 101:
            if not self.upgrade_ok:
                raise ProtocolError("101 Switching Protocols to a request that did not ask to upgrade")
            if not any(name.lower() == b"upgrade" for name, _ in self.headers):  # RFC 9110, 15.2.2
                raise ProtocolError("101 Switching Protocols without an Upgrade header")
            self.tunnel = True  # from here on the bytes are the upgraded protocol's
            return False
        self.in_interim = True  # until its on_message_complete, which comes next (a 1xx has no body)
        sink = self.sink
        if sink is not None:
            sink.on_resp_interim(status, self.reason, self.headers)
        return True

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_resp_body(body)

    def on_message_complete(self) -> None:
        if self.in_interim:  # the real head follows
            self.in_interim = False
            self.headers = []
            self.reason = b""
            return
        if self.tunnel or not self.got_head:  # a 101's end, or a HEAD answer already ended by hand
            return
        headers = self.headers
        self.headers = []  # a new list: the sink may keep the one it was given
        self.reason = b""
        self.got_head = False
        self._message_end(self.status, headers, self._keep_alive())


class Interim(NamedTuple):
    """A 1xx response other than 101; the final head follows."""

    status: int
    reason: bytes
    headers: Headers


class Head(NamedTuple):
    """The final response head (a 101 one when the request asked to upgrade)."""

    status: int
    reason: bytes
    headers: Headers


class Body(NamedTuple):
    """A piece of the body, as it arrived (chunk framing removed)."""

    chunk: bytes


class End(NamedTuple):
    """The response is complete; ``keep_alive`` tells whether the connection may carry another."""

    keep_alive: bool


class Upgrade(NamedTuple):
    """Bytes of the upgraded protocol, after an accepted 101 head (the first ones may be empty)."""

    rest: bytes


Event = Interim | Head | Body | End | Upgrade


class _Collector(ResponseEvents):
    """`EventReader`'s sink: the events of the bytes being fed, in order."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self.events.append(Interim(status, reason, list(headers)))

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        self.events.append(Head(status, reason, headers))

    def on_resp_body(self, chunk: bytes) -> None:
        self.events.append(Body(chunk))


class EventReader(ResponseReader[_Collector]):
    """The reader h11-style: `feed` bytes, get the events they complete; `eof` when the peer closes.

    ``is_head`` and ``upgrade_ok`` describe the request being answered, as for any `ResponseReader`.
    """

    __slots__ = ("collector", "partial", "upgraded")

    def __init__(self, *, is_head: bool = False, upgrade_ok: bool = False) -> None:
        self.partial = False  # a response has begun and not ended (set before the parser sees us)
        self.upgraded = False  # the parser is done: the bytes are the new protocol's
        super().__init__()
        self.sink = self.collector = _Collector()
        self.is_head = is_head
        self.upgrade_ok = upgrade_ok

    def feed(self, data: bytes) -> list[Event]:  # type: ignore[override]  # events, not the 101 rest
        """Parse bytes; return the events they complete. Raises `ProtocolError`."""
        if self.upgraded:
            return [Upgrade(data)]
        rest = super().feed(data)
        collector = self.collector
        if rest is not None:
            self.upgraded = True
            collector.events.append(Upgrade(rest))
        events, collector.events = collector.events, []
        return events

    def eof(self) -> list[Event]:
        """The peer closed: end a close-delimited body, or raise `ProtocolError` for a cut response."""
        if self.ends_at_close():
            self.got_head = self.partial = False
            return [End(keep_alive=False)]
        if self.partial and not self.tunnel:
            raise ProtocolError("the connection closed mid-response")
        return []

    def on_message_begin(self) -> None:
        self.partial = True

    def _message_end(self, status: int, headers: Headers, keep_alive: bool) -> None:
        self.partial = False
        self.collector.events.append(End(keep_alive))
