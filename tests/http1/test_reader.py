"""The response reader's framing rules, without sockets: bytes in, events out (`proxy.http1.reader`).

Every case runs twice: the bytes fed at once, and fed one byte at a time (bodies then arrive in pieces,
so consecutive body and upgrade events are joined before comparing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from proxy.http1.errors import ProtocolError
from proxy.http1.reader import Body, End, Event, EventReader, Head, Interim, ResponseReader, Upgrade
from proxy.upstream.conn import UpConn
from proxy.upstream.pipeconn import PipeConn

OK_5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CL5 = [(b"Content-Length", b"5")]
TE = [(b"Transfer-Encoding", b"chunked")]
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
UPGRADE_HEADERS = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]


@dataclass(frozen=True)
class Case:
    """Bytes from an upstream, the request they answer, and what the reader must make of them."""

    data: bytes
    events: list[Event] = field(default_factory=list)
    at_eof: list[Event] | None = None  # the events of eof(), None when eof() must raise
    is_head: bool = False
    upgrade_ok: bool = False


CASES: dict[str, Case] = {
    "content-length": Case(OK_5, [Head(200, b"OK", CL5), Body(b"hello"), End(True)], []),
    "content-length zero": Case(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        [Head(200, b"OK", [(b"Content-Length", b"0")]), End(True)],
        [],
    ),
    "chunked": Case(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        [Head(200, b"OK", TE), Body(b"hello world"), End(True)],
        [],
    ),
    "chunked trailers are dropped": Case(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n",
        [Head(200, b"OK", TE), Body(b"hi"), End(True)],
        [],
    ),
    "close-delimited body ends at eof": Case(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        [Head(200, b"OK", [(b"Content-Type", b"text/plain")]), Body(b"until the end")],
        [End(False)],
    ),
    "a coding other than chunked last: close-delimited": Case(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzzz",
        [Head(200, b"OK", [(b"Transfer-Encoding", b"chunked, gzip")]), Body(b"zzz")],
        [End(False)],
    ),
    "Connection: close ends keep-alive": Case(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        [Head(200, b"OK", [(b"Connection", b"close"), (b"Content-Length", b"2")]), Body(b"ok"), End(False)],
        [],
    ),
    "HTTP/1.0 is not keep-alive": Case(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        [Head(200, b"OK", [(b"Content-Length", b"2")]), Body(b"ok"), End(False)],
        [],
    ),
    "100 Continue, then the response": Case(
        b"HTTP/1.1 100 Continue\r\n\r\n" + OK_5,
        [Interim(100, b"Continue", []), Head(200, b"OK", CL5), Body(b"hello"), End(True)],
        [],
    ),
    "103 Early Hints keep their own headers": Case(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK_5,
        [
            Interim(103, b"Early Hints", [(b"Link", b"</a.css>")]),
            Head(200, b"OK", CL5),
            Body(b"hello"),
            End(True),
        ],
        [],
    ),
    "HEAD: Content-Length announces no body": Case(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", [Head(200, b"OK", CL5), End(True)], [], is_head=True
    ),
    "HEAD: chunked announces no body": Case(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        [Head(200, b"OK", TE), End(True)],
        [],
        is_head=True,
    ),
    # No body follows, but llhttp (which cannot be told the request was a HEAD) will not vouch for the
    # connection: it is not reused, the safe side.
    "HEAD: no framing headers is not close-delimited": Case(
        b"HTTP/1.1 200 OK\r\n\r\n", [Head(200, b"OK", []), End(False)], [], is_head=True
    ),
    "204 has no body, whatever it says": Case(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n" + OK_5,
        [Head(204, b"No Content", CL5), End(True), Head(200, b"OK", CL5), Body(b"hello"), End(True)],
        [],
    ),
    "304 has no body, whatever it says": Case(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + OK_5,
        [Head(304, b"Not Modified", CL5), End(True), Head(200, b"OK", CL5), Body(b"hello"), End(True)],
        [],
    ),
    "204 without framing is not close-delimited": Case(
        b"HTTP/1.1 204 No Content\r\n\r\n", [Head(204, b"No Content", []), End(True)], []
    ),
    "pipelined responses back to back": Case(
        OK_5
        + b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n"
        + b"HTTP/1.1 204 No Content\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        [
            Head(200, b"OK", CL5),
            Body(b"hello"),
            End(True),
            Head(404, b"Not Found", TE),
            Body(b"not"),
            End(True),
            Head(204, b"No Content", []),
            End(True),
            Head(200, b"OK", [(b"Content-Length", b"0")]),
            End(True),
        ],
        [],
    ),
    "101 to a request that asked to upgrade": Case(
        UPGRADE + b"\x81\x02hi",
        [Head(101, b"Switching Protocols", UPGRADE_HEADERS), Upgrade(b"\x81\x02hi")],
        [],
        upgrade_ok=True,
    ),
    "cut in the head": Case(b"HTTP/1.1 200 OK\r\nContent-Le", []),
    "cut in a Content-Length body": Case(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", [Head(200, b"OK", CL5), Body(b"hel")]
    ),
    "cut in a chunked body": Case(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", [Head(200, b"OK", TE), Body(b"hel")]
    ),
    "cut after an interim response": Case(b"HTTP/1.1 100 Continue\r\n\r\n", [Interim(100, b"Continue", [])]),
}

ERRORS: dict[str, tuple[bytes, str]] = {
    "101 to a request that did not ask": (UPGRADE, "did not ask to upgrade"),
    "Content-Length twice, different": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "Duplicate Content-Length",
    ),
    "Content-Length twice, the same": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        "Duplicate Content-Length",
    ),
    "Content-Length as a list": (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nab", "Content-Length"),
    "Content-Length with Transfer-Encoding": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding can't be present with Content-Length",
    ),
    "negative Content-Length": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    "not HTTP": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "Expected HTTP/"),
    "bad chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    "bad status code": (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "status"),
}


def joined(events: list[Event]) -> list[Event]:
    """Consecutive body pieces joined (empty ones dropped), and consecutive upgraded-protocol bytes."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Body) and not event.chunk:
            continue
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].chunk + event.chunk)
        elif isinstance(event, Upgrade) and out and isinstance(out[-1], Upgrade):
            out[-1] = Upgrade(out[-1].rest + event.rest)
        else:
            out.append(event)
    return out


def read(case: Case, data: bytes, bytewise: bool) -> tuple[EventReader, list[Event]]:
    """Feed ``data`` to a reader for ``case``'s request, whole or a byte at a time; all the events."""
    reader = EventReader(is_head=case.is_head, upgrade_ok=case.upgrade_ok)
    events: list[Event] = []
    for i in range(len(data)) if bytewise else [None]:
        events += reader.feed(data if i is None else data[i : i + 1])
    return reader, events


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(CASES))
def test_framing_rule(name: str, bytewise: bool) -> None:
    """Each framing rule turns the same bytes into the same events, however the bytes are split."""
    case = CASES[name]
    reader, events = read(case, case.data, bytewise)
    assert joined(events) == case.events
    if case.at_eof is None:
        with pytest.raises(ProtocolError, match="closed mid-response"):
            reader.eof()
    else:
        assert reader.eof() == case.at_eof


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_framing_is_a_protocol_error(name: str, bytewise: bool) -> None:
    """Unparseable or ambiguous responses raise the one ProtocolError, naming what was wrong."""
    data, why = ERRORS[name]
    with pytest.raises(ProtocolError, match=why) as caught:
        read(Case(data), data, bytewise)
    assert str(caught.value)


def test_a_101_must_name_its_protocol() -> None:
    """A 101 without an Upgrade header is refused even when the request asked to upgrade."""
    reader = EventReader(upgrade_ok=True)
    with pytest.raises(ProtocolError, match="without an Upgrade header"):
        reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")


def test_the_bytes_after_an_upgrade_are_the_new_protocols() -> None:
    """After an accepted 101, later bytes are not parsed as HTTP: they come out as they are."""
    reader = EventReader(upgrade_ok=True)
    assert reader.feed(UPGRADE) == [Head(101, b"Switching Protocols", UPGRADE_HEADERS), Upgrade(b"")]
    assert reader.feed(b"HTTP/1.1 not http") == [Upgrade(b"HTTP/1.1 not http")]


def test_a_head_answer_then_the_next_response() -> None:
    """A HEAD answer ends with its head; the connection's next response (a GET's) reads as usual."""
    reader = EventReader(is_head=True)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") == [Head(200, b"OK", CL5), End(True)]
    reader.is_head = False
    assert reader.feed(OK_5) == [Head(200, b"OK", CL5), Body(b"hello"), End(True)]


def test_each_head_gets_a_new_headers_list() -> None:
    """A sink may keep the headers list it was given: the next response does not write into it."""
    reader = EventReader()
    events = reader.feed(OK_5 + b"HTTP/1.1 200 OK\r\nX-Second: 1\r\nContent-Length: 0\r\n\r\n")
    assert events[0] == Head(200, b"OK", CL5)
    assert events[3] == Head(200, b"OK", [(b"X-Second", b"1"), (b"Content-Length", b"0")])


def test_an_idle_close_is_no_event() -> None:
    """A connection closing between responses ends nothing and is no error."""
    reader = EventReader()
    reader.feed(OK_5)
    assert reader.eof() == []


def test_every_upstream_client_reads_with_the_one_reader() -> None:
    """The pooled connection and the pipelined one are response readers: one set of framing rules."""
    assert issubclass(UpConn, ResponseReader)
    assert issubclass(PipeConn, ResponseReader)
