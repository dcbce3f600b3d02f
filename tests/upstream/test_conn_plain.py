"""`UpConn` reads a whole plain response without llhttp (compiled build) and its sink sees what llhttp's
callbacks would have shown it; any other read goes to llhttp. And a response's end, either way: bytes after
it close the connection, a clean end hands it back to the pool before the sink's end runs (which may start
the next request on it), and the sink's failures are its own.

Each test opens a real pooled connection to a loopback upstream that never answers, starts a request on
it, and injects the response's reads itself (`data_received`), with the boundaries it chooses, counting
what reaches llhttp. In the pure-Python build (`make test-pure`) every read reaches llhttp, with the same
events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.feeds import fed_to_parser
from support.upstreams import RawUpstream, read_request

from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers
from proxy.http1.reader import READ_PLAIN
from proxy.routing.table import UpstreamSpec
from proxy.upstream.conn import ResponseSink, UpConn
from proxy.upstream.pool import UpstreamPool

PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
HEADERS = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")]
Event = tuple[object, ...]


class Recorder(ResponseSink):
    """A sink that records its events; ``raise_on_head`` makes its head callback fail."""

    def __init__(self, raise_on_head: bool = False) -> None:
        self.events: list[Event] = []
        self.message = ""
        self.raise_on_head = raise_on_head

    def on_resp_interim(self, status: int, reason: bytes, headers: Headers) -> None:
        self.events.append(("interim", status, reason, list(headers)))

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        if self.raise_on_head:
            raise RuntimeError("the sink broke")
        self.events.append(("head", status, reason, list(headers)))

    def on_resp_body(self, chunk: bytes) -> None:
        self.events.append(("body", chunk))

    def on_resp_done(self) -> None:
        self.events.append(("done",))

    def on_resp_error(self, exc: UpstreamError, retryable: bool) -> None:
        self.events.append(("error", exc.kind, retryable))
        self.message = str(exc)

    def on_upgrade(self, conn: UpConn, rest: bytes) -> None:
        self.events.append(("upgrade", rest))

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_tunnel_closed(self) -> None:
        pass

    def flush(self) -> None:
        self.events.append(("flush",))

    def up_pause_writing(self) -> None:
        pass

    def up_resume_writing(self) -> None:
        pass


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # answers nothing: the test injects the response

    upstream = await RawUpstream(silent).start()
    spec = UpstreamSpec(
        name="up", url=f"http://127.0.0.1:{upstream.port}", scheme="http", host="127.0.0.1",
        port=upstream.port, base_path="", connect_timeout=1.0, total_timeout=5.0, pool_size=4,
    )  # fmt: skip
    made = UpstreamPool(spec)
    yield made
    made.close()
    await upstream.close()


async def respond(
    pool: UpstreamPool, reads: list[bytes], *, is_head: bool = False, sink: Recorder | None = None,
    conn: UpConn | None = None,
) -> tuple[list[Event], list[bytes], UpConn]:  # fmt: skip
    """Start a GET (or HEAD) on ``conn`` or a fresh connection, inject ``reads``; the sink's events, the
    bytes llhttp was fed, the connection."""
    conn = conn or await pool.connect(2.0)
    fed = fed_to_parser(conn)
    sink = sink or Recorder()
    method = b"HEAD" if is_head else b"GET"
    conn.start(sink, method + b" / HTTP/1.1\r\nHost: up\r\n\r\n", is_head, True, False)
    for data in reads:
        conn.data_received(data)
    return sink.events, fed, conn


def plain_or_not(reads: list[bytes], fed_when_compiled: list[bytes]) -> list[bytes]:
    """What llhttp must have been fed: everything in the pure-Python build."""
    return reads if READ_PLAIN is None else fed_when_compiled


async def test_a_whole_plain_response_in_one_read_skips_llhttp(pool: UpstreamPool) -> None:
    events, fed, conn = await respond(pool, [PLAIN])
    assert events == [("head", 200, b"OK", HEADERS), ("body", b"hello"), ("done",)]
    assert fed == plain_or_not([PLAIN], [])
    assert conn in pool.idle and not conn.closed  # back in the pool, ready for the next request
    assert (conn.headers, conn.reason, conn.got_head, conn.got_bytes) == ([], b"", False, True)
    # The connection reads its next response the same way.
    reused = pool.acquire()
    assert reused is conn
    second = PLAIN.replace(b"hello", b"world")
    events, fed, _ = await respond(pool, [second], conn=reused)
    assert fed == plain_or_not([second], [])
    assert events == [("head", 200, b"OK", HEADERS), ("body", b"world"), ("done",)]


async def test_the_same_response_in_two_reads_goes_to_llhttp_with_the_same_events(
    pool: UpstreamPool,
) -> None:
    reads = [PLAIN[:30], PLAIN[30:]]
    events, fed, conn = await respond(pool, reads)
    assert fed == reads
    assert [e for e in events if e != ("flush",)] == [
        ("head", 200, b"OK", HEADERS),
        ("body", b"hello"),
        ("done",),
    ]
    assert conn in pool.idle


async def test_an_empty_body_and_a_close_are_read_as_llhttp_reads_them(pool: UpstreamPool) -> None:
    data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    events, fed, conn = await respond(pool, [data])
    assert fed == plain_or_not([data], [])
    head = [(b"Content-Length", b"0"), (b"Connection", b"close")]
    assert events == [("head", 404, b"Not Found", head), ("done",)]
    assert conn.closed and conn not in pool.idle  # the upstream ends the connection: not reused


@pytest.mark.parametrize(
    "data",
    [
        PLAIN + b"HTTP/1.1 200 OK\r\n",  # bytes after the response: llhttp's to judge
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + PLAIN,
    ],
)
async def test_other_reads_go_to_llhttp(pool: UpstreamPool, data: bytes) -> None:
    events, fed, _ = await respond(pool, [data])
    assert fed == [data]
    headers = [(b"Transfer-Encoding", b"chunked")] if b"chunked" in data else HEADERS
    assert ("head", 200, b"OK", headers) in events


async def test_the_answer_to_a_head_goes_to_llhttp(pool: UpstreamPool) -> None:
    events, fed, conn = await respond(pool, [PLAIN[: -len(b"hello")]], is_head=True)
    assert fed == [PLAIN[: -len(b"hello")]]
    assert events == [("head", 200, b"OK", HEADERS), ("done",)]
    assert conn in pool.idle


@pytest.mark.parametrize("split", [False, True])
async def test_a_failing_sink_fails_the_response_either_way(
    pool: UpstreamPool, split: bool, caplog: pytest.LogCaptureFixture
) -> None:
    reads = [PLAIN[:-2], PLAIN[-2:]] if split else [PLAIN]  # the head whole in the first read
    sink = Recorder(raise_on_head=True)
    events, fed, conn = await respond(pool, reads, sink=sink)
    assert events == [("error", "protocol", False)]
    # The gateway's own failure, named alike either way; its text stays in the log (it would reach a client).
    assert sink.message.endswith("invalid response: the gateway failed while reading it (RuntimeError)")
    assert "the sink broke" in caplog.text
    assert conn.closed and conn not in pool.idle
    assert fed == (reads[:1] if split or READ_PLAIN is None else [])


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("first", "stray"),
    [
        (PLAIN, b"HTTP/1.1 200 OK\r\n"),  # the start of a second head
        (PLAIN, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),  # a whole head: its body would be the next
        (PLAIN, PLAIN),  # a whole second response
        (CHUNKED, b"H"),
    ],
)
async def test_bytes_after_the_response_in_its_read_end_the_connection(
    pool: UpstreamPool, first: bytes, stray: bytes
) -> None:
    """An upstream that sends more than one response to one request: the response is delivered and the
    connection closed, not reused (the rest would be read as the next request's answer: nginx closes such
    a connection too)."""
    events, _, conn = await respond(pool, [first + stray])
    assert [e[:2] for e in events if e[0] != "flush"] == [("head", 200), ("body", b"hello"), ("done",)]
    assert conn.closed and pool.acquire() is None  # (a closed connection in the idle list is skipped)


class Chaining(Recorder):
    """A sink whose end starts the next request at once on whatever idle connection the pool has (as a
    client's pipelined request would)."""

    def __init__(self, pool: UpstreamPool) -> None:
        super().__init__()
        self.pool = pool
        self.next = Recorder()
        self.conn: UpConn | None = None

    def on_resp_done(self) -> None:
        super().on_resp_done()
        self.conn = self.pool.acquire()
        if self.conn is not None:
            self.conn.start(self.next, b"GET /next HTTP/1.1\r\nHost: up\r\n\r\n", False, True, False)


@pytest.mark.parametrize(
    ("is_head", "read"),
    [
        (False, PLAIN + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        (False, CHUNKED + b"HTTP/1.1 200 OK\r\n"),
        (True, PLAIN),  # a body after a HEAD's answer
        (True, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + PLAIN),
    ],
)
async def test_no_request_takes_the_connection_while_its_read_is_parsed(
    pool: UpstreamPool, is_head: bool, read: bytes
) -> None:
    """A response's end lets go of its sink while llhttp still has the rest of the read to parse; a sink
    whose end starts the next request at once finds no idle connection (this one goes back to the pool
    only after the read, if nothing followed the response: here something did, so it closes). Before, that
    request took the connection and was given the stray bytes as its answer."""
    sink = Chaining(pool)
    events, _, conn = await respond(pool, [read], is_head=is_head, sink=sink)
    kinds = [e[0] for e in events if e[0] != "flush"]
    assert kinds == (["head", "done"] if is_head else ["head", "body", "done"])
    assert sink.conn is None and sink.next.events == []
    assert conn.closed and pool.acquire() is None


@pytest.mark.parametrize(
    ("is_head", "reads"),
    [
        (False, [CHUNKED]),
        (False, [CHUNKED[:20], CHUNKED[20:]]),  # split: the end in the second read
        (False, [PLAIN]),
        (True, [PLAIN[: -len(b"hello")]]),  # a HEAD's answer: ended by hand
    ],
)
async def test_a_sink_end_that_starts_the_next_request_finds_the_connection_idle(
    pool: UpstreamPool, is_head: bool, reads: list[bytes]
) -> None:
    """The usual case: nothing follows the response, and by the time its sink's end runs the connection
    is back in the pool, so a pipelining client's next request takes it again (not a second one)."""
    sink = Chaining(pool)
    events, _, conn = await respond(pool, reads, is_head=is_head, sink=sink)
    assert [e[0] for e in events if e[0] != "flush"][-1] == "done"
    assert sink.conn is conn and not conn.closed and sink.next.events == []


class ChainingThenFailing(Chaining):
    """A sink whose end starts the next request, then raises (a bug of the gateway's own)."""

    def on_resp_done(self) -> None:
        super().on_resp_done()
        raise RuntimeError("the end broke")


@pytest.mark.parametrize("reads", [[PLAIN], [CHUNKED], [PLAIN[:-2], PLAIN[-2:]]])
async def test_a_failing_sink_end_is_logged_and_fails_no_request(
    pool: UpstreamPool, reads: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The sink's end raising is the sink's failure: logged; the request it started on the connection
    goes on (before, on the plain path, it failed as if the upstream had sent an invalid response)."""
    sink = ChainingThenFailing(pool)
    events, _, conn = await respond(pool, reads, sink=sink)
    kinds = [e[0] for e in events if e[0] != "flush"]
    assert kinds[0] == "head" and kinds[-1] == "done" and "error" not in kinds
    assert sink.conn is conn and not conn.closed and sink.next.events == []
    assert "the end broke" in caplog.text


async def test_a_connection_paused_after_its_response_reads_again_for_the_next(pool: UpstreamPool) -> None:
    """A slow client can pause the upstream's reading from its response's end (the end's own write to it
    crossing the high-water mark) after the connection is back in the pool: the next request on it reads."""
    _, _, conn = await respond(pool, [PLAIN])
    conn.pause_reading()  # as `ClientProtocol.pause_writing` does through its request's connection
    assert pool.acquire() is conn and conn.transport is not None and not conn.transport.is_reading()
    conn.start(Recorder(), b"GET / HTTP/1.1\r\nHost: up\r\n\r\n", False, True, False)
    assert not conn.paused and conn.transport.is_reading()


class RawSeen(Recorder):
    """Records, at each head, the bytes its connection says the response was (`UpConn.raw`)."""

    def __init__(self, conn: UpConn) -> None:
        super().__init__()
        self.conn = conn

    def on_resp_head(self, status: int, reason: bytes, headers: Headers) -> None:
        self.events.append(("raw", self.conn.raw))


async def test_a_sink_sees_the_bytes_of_a_response_that_was_one_plain_read(pool: UpstreamPool) -> None:
    """While a whole plain keep-alive response is handed over, `UpConn.raw` is its bytes (compiled build;
    shadowing compares a copy's answer with them); b"" after it, for one in two reads, one ending the
    connection, and a HEAD's."""
    closing = PLAIN.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    cases: list[tuple[list[bytes], bool, bytes]] = [
        ([PLAIN], False, PLAIN if READ_PLAIN is not None else b""),
        ([PLAIN[:20], PLAIN[20:]], False, b""),
        ([closing], False, b""),
        ([PLAIN[:-5]], True, b""),
    ]
    for reads, is_head, raw in cases:
        conn = await pool.connect(2.0)
        sink = RawSeen(conn)
        events, _, _ = await respond(pool, reads, is_head=is_head, sink=sink, conn=conn)
        assert [e for e in events if e[0] == "raw"] == [("raw", raw)] and events[-1] == ("done",), events
        assert conn.raw == b""
