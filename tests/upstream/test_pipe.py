"""`proxy.upstream.pipe.PipePool` against scripted loopback upstreams: pipelining, bounds, failures, close.

Each test runs a raw asyncio server (`Upstream`) that reads requests as soon as they arrive (so it can
count, per connection, how many were outstanding at once) and answers them in order as the test scripts.
The default answer echoes the request path in the body and in an ``X-Path`` header, so a response given
to the wrong call is caught.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop
from support.clock import ManualClock
from support.feeds import fed_to_parser
from support.waiting import WITHIN, eventually

from proxy.http1.errors import UpstreamError
from proxy.routing.table import UpstreamSpec, parse_routes
from proxy.upstream.pipe import Expected, PipeCall, PipePool
from proxy.upstream.pipeconn import READ_PLAIN


@dataclass
class Req:
    """One request as the upstream read it: its connection (0, 1, ... in accept order), index on it, path."""

    conn: int
    index: int
    path: str


# respond(req, writer) writes the answer (or not) and returns None to go on, "close" to close the
# connection now, or "hang" to answer nothing more on this connection (it stays open until the client
# closes it).
Respond = Callable[[Req, asyncio.StreamWriter], Awaitable[str | None]]


def ok(path: str, extra: bytes = b"") -> bytes:
    """A 200 whose body and X-Path header name ``path``; ``extra`` is more header lines."""
    body = f"echo {path}".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Path: %s\r\n%s\r\n%s" % (
        len(body),
        path.encode(),
        extra,
        body,
    )


def echoed(path: str) -> bytes:
    return f"echo {path}".encode()


async def echo(req: Req, writer: asyncio.StreamWriter) -> str | None:
    writer.write(ok(req.path))
    return None


class Upstream:
    """A raw loopback HTTP/1.1 upstream answering pipelined requests in order, as ``respond`` scripts."""

    def __init__(self, respond: Respond = echo, delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay  # seconds before each answer
        self.conns = 0
        self.requests: list[Req] = []
        self.max_outstanding: dict[int, int] = {}  # per connection: requests read but not yet answered
        self.ended: set[int] = set()  # connections the client closed (EOF or reset seen)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def paths(self, conn: int) -> list[str]:
        """The paths requested on connection ``conn``, in arrival order."""
        return [r.path for r in self.requests if r.conn == conn]

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        cid = self.conns
        self.conns += 1
        self.max_outstanding[cid] = 0
        queue: asyncio.Queue[Req | None] = asyncio.Queue()
        outstanding = 0

        async def read_all() -> None:
            nonlocal outstanding
            index = 0
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    req = Req(cid, index, head.split(b" ", 2)[1].decode())
                    index += 1
                    self.requests.append(req)
                    outstanding += 1
                    self.max_outstanding[cid] = max(self.max_outstanding[cid], outstanding)
                    queue.put_nowait(req)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.ended.add(cid)
                queue.put_nowait(None)

        reading = asyncio.create_task(read_all())
        try:
            while (req := await queue.get()) is not None:
                if self.delay:
                    await asyncio.sleep(self.delay)
                action = await self.respond(req, writer)
                outstanding -= 1
                await writer.drain()
                if action == "close":
                    break
                if action == "hang":
                    await reading  # until the client closes the connection
                    break
        except ConnectionError:
            pass
        finally:
            reading.cancel()
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)
        # Every connection's task has run its finally (writer closed): nothing is left closing.
        await eventually(lambda: not self._tasks, what="the upstream's connection tasks to end")


class Done:
    """The ``done`` callback: records finished calls, and any call finished more than once."""

    def __init__(self) -> None:
        self.calls: list[PipeCall] = []
        self.counts: collections.Counter[int] = collections.Counter()

    def __call__(self, call: PipeCall) -> None:
        assert call.finished
        assert (call.result is not None) + (call.error is not None) + call.same == 1
        self.calls.append(call)
        self.counts[id(call)] += 1

    async def wait(self, n: int, within: float = WITHIN) -> None:
        """Until ``n`` calls have finished (fails the test after ``within`` seconds)."""
        finished = lambda: len(self.calls)  # noqa: E731  (used twice)
        await eventually(lambda: finished() >= n, what=f"{n} finished calls", within=within, last=finished)

    def once(self, calls: list[PipeCall]) -> bool:
        """Every call of ``calls`` finished exactly once and no other call finished."""
        return len(self.calls) == len(calls) and all(self.counts[id(c)] == 1 for c in calls)


async def settled(upstream: Upstream, pool: PipePool) -> None:
    """Until the pool has no connection attempt running and the upstream has served every connection to
    its end: after that nothing more can be sent, so an absence (no request, no connection) is final."""
    await eventually(lambda: not pool._tasks, what="the pool's connection attempts to end")
    await eventually(lambda: not upstream._tasks, what="every upstream connection to end")


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: new.test\r\nAccept: */*\r\n\r\n".encode()


def spec_for(port: int) -> UpstreamSpec:
    text = (
        "upstreams:\n"
        '  legacy: {url: "http://127.0.0.1:1"}\n'
        f'  new: {{url: "http://127.0.0.1:{port}"}}\n'
        "default: legacy\n"
        "routes: []\n"
    )
    return parse_routes(text, "t.yaml").upstreams["new"]


def answer(call: PipeCall) -> tuple[int, dict[bytes, bytes], bytes]:
    """The call's (status, headers with lower-cased names, body); fails if it has none."""
    assert call.error is None, call.error
    assert call.result is not None
    status, headers, body = call.result
    return status, {k.lower(): v for k, v in headers}, body


def failure(call: PipeCall) -> str:
    """The kind of the call's UpstreamError; fails if it succeeded."""
    assert call.result is None, call.result
    assert isinstance(call.error, UpstreamError)
    return call.error.kind


Make = Callable[..., Awaitable[tuple[Upstream, PipePool]]]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # as in production
}


@contextlib.asynccontextmanager
async def maker() -> AsyncIterator[Make]:
    """Factory: a started `Upstream` (``respond``, ``delay``) and a PipePool on it (other keywords)."""
    made: list[tuple[Upstream, PipePool]] = []

    async def factory(
        respond: Respond = echo, delay: float = 0.0, **pool_kw: Any
    ) -> tuple[Upstream, PipePool]:
        upstream = await Upstream(respond, delay).start()
        pool = PipePool(spec_for(upstream.port), asyncio.get_running_loop(), **pool_kw)
        made.append((upstream, pool))
        return upstream, pool

    try:
        yield factory
    finally:
        for upstream, pool in made:
            pool.close(abort=True)
            await upstream.close()


def both_loops(body: Callable[[Make], Awaitable[None]]) -> Callable[[str], None]:
    """Turn ``async def body(make)`` into a test run on asyncio's loop and on uvloop, bounded in time."""

    @pytest.mark.parametrize("loop", list(LOOPS))
    def test(loop: str) -> None:
        async def run() -> None:
            async with maker() as make:
                await asyncio.wait_for(body(make), 5)

        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(run())

    test.__name__ = test.__qualname__ = body.__name__
    test.__doc__ = body.__doc__
    test.__module__ = body.__module__
    return test


# --- pipelining


@both_loops
async def test_same_iteration_calls_share_one_connection(make: Make) -> None:
    """Calls started in one loop iteration go out in order on one connection, each gets its own answer."""
    upstream, pool = await make()
    done = Done()
    paths = [f"/items/{n}" for n in range(8)]
    calls = [pool.call(get(p), 2.0, done, tag=p) for p in paths]
    await done.wait(8)
    assert upstream.conns == 1
    assert upstream.paths(0) == paths
    assert upstream.max_outstanding[0] == 8  # all of them were in flight at once
    for call, path in zip(calls, paths, strict=True):
        status, headers, body = answer(call)
        assert (status, headers[b"x-path"], body) == (200, path.encode(), echoed(path))
        assert call.tag == path
        assert call.done_at >= call.started
    assert [c.timed for c in calls] == [True] + [False] * 7
    # A second batch, now on the open and idle connection: one write again, still in order.
    more = [f"/more/{n}" for n in range(5)]
    calls += [pool.call(get(p), 2.0, done) for p in more]
    await done.wait(13)
    assert upstream.conns == 1
    assert upstream.paths(0) == paths + more
    assert upstream.max_outstanding[0] == 8
    assert [answer(c)[2] for c in calls[8:]] == [echoed(p) for p in more]
    assert [c.timed for c in calls[8:]] == [True] + [False] * 4
    assert done.once(calls)


@both_loops
async def test_idle_connection_reused_and_each_call_timed(make: Make) -> None:
    """Calls started in later iterations, once the connection is idle, reuse it and are each timed."""
    upstream, pool = await make()
    done = Done()
    calls = []
    for n, path in enumerate(["/a", "/b", "/c"]):
        calls.append(pool.call(get(path), 2.0, done))
        await done.wait(n + 1)
        await asyncio.sleep(0)  # the next call starts in a later loop iteration: that is the case tested
    assert upstream.conns == 1
    assert upstream.paths(0) == ["/a", "/b", "/c"]
    assert upstream.max_outstanding[0] == 1
    assert [answer(c)[2] for c in calls] == [echoed("/a"), echoed("/b"), echoed("/c")]
    assert all(c.timed for c in calls)
    assert done.once(calls)


@both_loops
async def test_depth_and_max_conns_bound_the_pipelines(make: Make) -> None:
    """depth=2, max_conns=2, 6 calls: 2 connections, at most 2 outstanding on each, the rest wait."""
    upstream, pool = await make(delay=0.02, depth=2, max_conns=2)
    done = Done()
    paths = [f"/p{n}" for n in range(6)]
    calls = [pool.call(get(p), 2.0, done) for p in paths]
    assert len(pool.waiting) == 2
    await done.wait(6)
    assert upstream.conns == 2
    assert upstream.max_outstanding == {0: 2, 1: 2}
    assert sorted(r.path for r in upstream.requests) == paths
    for call, path in zip(calls, paths, strict=True):
        assert answer(call)[2] == echoed(path)
    assert done.once(calls)


# --- the upstream ends the connection


@both_loops
async def test_connection_close_response_resends_the_rest(make: Make) -> None:
    """A `Connection: close` answer completes its call; the calls behind it go once on a new connection."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0:
            writer.write(ok(req.path, b"Connection: close\r\n"))
            return "hang"  # the header alone must do: the upstream does not close the socket itself
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b", "/c")]
    await done.wait(3)
    assert [answer(c)[2] for c in calls] == [echoed("/a"), echoed("/b"), echoed("/c")]
    assert upstream.conns == 2
    assert upstream.paths(0)[0] == "/a"
    assert upstream.paths(1) == ["/b", "/c"]
    assert [c.retried for c in calls] == [False, True, True]
    assert calls[0].timed and not calls[2].timed  # /c was behind /b on the new connection
    await eventually(lambda: 0 in upstream.ended, what="the gateway's close")
    assert done.once(calls)


@both_loops
async def test_close_after_one_of_three_resends_the_other_two(make: Make) -> None:
    """The upstream closes after answering 1 of 3 pipelined calls: the other 2 are sent again and succeed."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0 and req.index > 0:
            return "close"
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b", "/c")]
    await done.wait(3)
    assert [answer(c)[2] for c in calls] == [echoed("/a"), echoed("/b"), echoed("/c")]
    assert upstream.conns == 2
    assert upstream.paths(1) == ["/b", "/c"]
    assert [c.retried for c in calls] == [False, True, True]
    assert done.once(calls)


@both_loops
async def test_resent_calls_fail_when_the_upstream_closes_again(make: Make) -> None:
    """Calls re-sent once fail with an UpstreamError when the new connection closes unanswered too."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0 and req.index == 0:
            writer.write(ok(req.path))
            return None
        return "close"

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b", "/c")]
    await done.wait(3)
    assert answer(calls[0])[2] == echoed("/a")
    assert [failure(c) for c in calls[1:]] == ["connect", "connect"]
    await settled(upstream, pool)
    assert upstream.conns == 2  # retried at most once: no third connection
    assert upstream.paths(1) == ["/b", "/c"]
    assert done.once(calls)


@both_loops
async def test_body_delimited_by_close_completes(make: Make) -> None:
    """A response without Content-Length or chunking ends at the close, with its whole body."""
    big = b"start-" + bytes(range(256)) * 400 + b"-end"

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn > 0:
            writer.write(ok(req.path))
            return None
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for n in range(0, len(big), 30000):
            writer.write(big[n : n + 30000])
            await writer.drain()
            await asyncio.sleep(0.002)
        return "close"

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/big", "/next")]
    await done.wait(2)
    status, headers, body = answer(calls[0])
    assert (status, headers[b"content-type"]) == (200, b"application/octet-stream")
    assert body == big
    assert answer(calls[1])[2] == echoed("/next")
    assert upstream.conns == 2
    assert calls[1].retried
    assert done.once(calls)


@both_loops
async def test_close_mid_body_fails_head_with_protocol(make: Make) -> None:
    """A close before a Content-Length body is complete fails that call (protocol); the rest are re-sent."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn > 0:
            writer.write(ok(req.path))
            return None
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        return "close"

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/short", "/next")]
    await done.wait(2)
    assert failure(calls[0]) == "protocol"
    assert answer(calls[1])[2] == echoed("/next")
    assert upstream.conns == 2
    assert done.once(calls)


# --- framing


@both_loops
async def test_chunked_bodies_pipelined(make: Make) -> None:
    """Chunked bodies, sent in pieces and with a trailer, are de-chunked for each pipelined call."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Path: %s\r\n\r\n"
        writer.write(head % req.path.encode())
        for piece in (b"echo ", req.path.encode(), b"!" * 3000):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(b"0\r\nX-Trailer: t\r\n\r\n")
        return None

    upstream, pool = await make(respond)
    done = Done()
    paths = ["/c1", "/c2", "/c3"]
    calls = [pool.call(get(p), 2.0, done) for p in paths]
    await done.wait(3)
    for call, path in zip(calls, paths, strict=True):
        status, headers, body = answer(call)
        assert status == 200
        assert body == echoed(path) + b"!" * 3000
        assert headers[b"x-path"] == path.encode()
        assert b"x-trailer" not in headers
    assert upstream.conns == 1
    assert done.once(calls)


@both_loops
async def test_interim_responses_skipped(make: Make) -> None:
    """100 Continue and 103 Early Hints before a 200 are skipped; the call gets the 200 and its headers."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.path == "/interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.005)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    paths = ["/a", "/interim", "/c"]
    calls = [pool.call(get(p), 2.0, done) for p in paths]
    await done.wait(3)
    for call, path in zip(calls, paths, strict=True):
        status, headers, body = answer(call)
        assert (status, body, headers[b"x-path"]) == (200, echoed(path), path.encode())
        assert b"link" not in headers
    assert upstream.conns == 1
    assert done.once(calls)


@both_loops
async def test_garbage_fails_head_with_protocol_and_resends_rest(make: Make) -> None:
    """Bytes that are not HTTP fail the head call with kind "protocol"; the calls behind it are re-sent."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0:
            writer.write(b"SSH-2.0-OpenSSH_9.6 this is not http\r\n\r\n")
            return "hang"
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b", "/c")]
    await done.wait(3)
    assert failure(calls[0]) == "protocol"
    assert [answer(c)[2] for c in calls[1:]] == [echoed("/b"), echoed("/c")]
    assert upstream.conns == 2
    assert upstream.paths(1) == ["/b", "/c"]
    await eventually(lambda: 0 in upstream.ended, what="the broken conn closed")
    assert done.once(calls)


@both_loops
async def test_no_body_statuses_pipelined(make: Make) -> None:
    """A 204 and a 304 end at their head whatever Content-Length says; the answers behind them stay whole."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.path == "/204":
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Path: /204\r\n\r\n")
        elif req.path == "/304":
            writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nX-Path: /304\r\n\r\n")
        else:
            writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    paths = ["/204", "/a", "/304", "/b"]
    calls = [pool.call(get(p), 2.0, done) for p in paths]
    await done.wait(4)
    got = [answer(c) for c in calls]
    assert [(s, h[b"x-path"], b) for s, h, b in got] == [
        (204, b"/204", b""), (200, b"/a", echoed("/a")), (304, b"/304", b""), (200, b"/b", echoed("/b")),
    ]  # fmt: skip
    assert upstream.conns == 1
    assert done.once(calls)


@both_loops
async def test_unasked_101_fails_head_with_protocol_and_resends_rest(make: Make) -> None:
    """A pipelined GET never asks to upgrade: a 101 fails its call ("protocol"); the rest are re-sent."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
            return "hang"
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b")]
    await done.wait(2)
    assert failure(calls[0]) == "protocol"
    assert "did not ask to upgrade" in str(calls[0].error)
    assert answer(calls[1])[2] == echoed("/b")
    assert upstream.paths(1) == ["/b"]
    assert done.once(calls)


@both_loops
async def test_ambiguous_framing_fails_head_with_protocol(make: Make) -> None:
    """Content-Length with Transfer-Encoding is refused, not guessed at: the call fails ("protocol")."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            writer.write(head + b"0\r\n\r\n")
            return "hang"
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b")]
    await done.wait(2)
    assert failure(calls[0]) == "protocol"
    assert "Transfer-Encoding" in str(calls[0].error)
    assert answer(calls[1])[2] == echoed("/b")
    assert upstream.paths(1) == ["/b"]
    assert done.once(calls)


@both_loops
async def test_connect_failure_names_the_upstream_and_its_address(make: Make) -> None:
    """The pipelined pool connects as the pooled one does: the error names the upstream and address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = PipePool(spec_for(port), asyncio.get_running_loop())
    done = Done()
    try:
        call = pool.call(get("/"), 5.0, done)
        await done.wait(1)
        assert failure(call) == "connect"
        assert f"cannot connect to upstream new (127.0.0.1:{port})" in str(call.error)
    finally:
        pool.close(abort=True)


# --- deadlines


async def hang_on_hang(req: Req, writer: asyncio.StreamWriter) -> str | None:
    """Answer every path at once except ``/hang``, which never gets an answer."""
    if req.path == "/hang":
        return "hang"
    writer.write(ok(req.path))
    return None


@both_loops
async def test_hung_head_expires_and_the_rest_are_resent(make: Make) -> None:
    """A head call past its deadline fails with "timeout" at sweep; its connection closes, rest re-sent."""
    upstream, pool = await make(hang_on_hang)
    loop = asyncio.get_running_loop()
    done = Done()
    calls = [pool.call(get("/hang"), 0.2, done)] + [pool.call(get(p), 5.0, done) for p in ("/b", "/c")]
    await eventually(lambda: len(upstream.requests) == 3, what="3 requests upstream")
    pool.sweep(loop.time())
    assert done.calls == []  # nothing is late yet
    pool.sweep(loop.time() + 0.5)
    assert failure(calls[0]) == "timeout"
    await done.wait(3)
    assert [answer(c)[2] for c in calls[1:]] == [echoed("/b"), echoed("/c")]
    assert upstream.paths(1) == ["/b", "/c"]
    await eventually(lambda: 0 in upstream.ended, what="the hung conn closed")
    assert upstream.conns == 2
    assert done.once(calls)


@both_loops
async def test_late_call_behind_head_expires_alone(make: Make) -> None:
    """A pipelined call past its deadline fails alone (timeout); its connection stays, late answer dropped."""
    upstream, pool = await make(delay=0.1)
    loop = asyncio.get_running_loop()
    done = Done()
    calls = [pool.call(get("/slow"), 5.0, done)] + [pool.call(get(p), 0.05, done) for p in ("/b", "/c")]
    await eventually(lambda: len(upstream.requests) == 3, what="3 requests upstream")
    pool.sweep(loop.time() + 0.06)
    assert done.calls == calls[1:]
    assert [failure(c) for c in calls[1:]] == ["timeout", "timeout"]
    await done.wait(3)
    assert answer(calls[0])[2] == echoed("/slow")
    # The answers of /b and /c arrive too late and are ignored.
    await eventually(lambda: pool.conns[0].served == 3, what="the late answers read")
    assert done.once(calls)
    again = pool.call(get("/again"), 2.0, done)
    await done.wait(4)
    assert answer(again)[2] == echoed("/again")
    assert upstream.conns == 1
    assert not upstream.ended


@both_loops
async def test_resent_call_latency_is_its_own(make: Make) -> None:
    """A call re-sent from behind a hung head is not timed, or its latency excludes the wait behind it."""
    clock = ManualClock()  # the calls' times: the wait behind /hang is exactly what the test says
    upstream, pool = await make(hang_on_hang, clock=clock)
    done = Done()
    hung, behind = pool.call(get("/hang"), 0.15, done), pool.call(get("/b"), 5.0, done)
    await eventually(lambda: len(upstream.requests) == 2, what="2 requests upstream")
    clock.advance(0.2)  # time passes behind the hung head
    pool.sweep(clock())
    await done.wait(2)
    assert failure(hung) == "timeout"
    assert answer(behind)[2] == echoed("/b")
    own = behind.done_at - behind.started
    assert not behind.timed or own < 0.15, f"timed, with {own:.3f}s spent mostly behind /hang"


@both_loops
async def test_waiting_call_latency_is_its_own(make: Make) -> None:
    """A call that waited for room behind another call is not timed, or its latency excludes the wait."""
    clock = ManualClock()
    upstream, pool = await make(delay=0.1, depth=1, max_conns=1, clock=clock)
    done = Done()
    first, waited = pool.call(get("/a"), 2.0, done), pool.call(get("/b"), 2.0, done)
    assert list(pool.waiting) == [waited]
    clock.advance(0.2)  # /b waits for room while /a is answered: 0.2 s on the calls' clock
    await done.wait(2)
    assert answer(first)[2] == echoed("/a") and answer(waited)[2] == echoed("/b")
    assert upstream.conns == 1
    own = waited.done_at - waited.started
    assert not waited.timed or own < 0.15, f"timed, with {own:.3f}s of which 0.2s waiting for /a"


@both_loops
async def test_call_expiring_while_connecting_is_dropped(make: Make) -> None:
    """A call that expires before its connection opens fails with "timeout" and is never sent."""
    upstream, pool = await make()
    loop = asyncio.get_running_loop()
    done = Done()
    call = pool.call(get("/late"), 0.01, done)
    pool.sweep(loop.time() + 1)
    assert failure(call) == "timeout"
    await settled(upstream, pool)
    assert upstream.requests == []
    assert pool.conns == []
    assert done.once([call])


@both_loops
async def test_waiting_call_expires(make: Make) -> None:
    """A call waiting for room on a full pool fails with "timeout" at sweep and is never sent."""
    upstream, pool = await make(delay=0.1, depth=1, max_conns=1)
    loop = asyncio.get_running_loop()
    done = Done()
    calls = [pool.call(get("/first"), 5.0, done), pool.call(get("/waits"), 0.05, done)]
    assert list(pool.waiting) == [calls[1]]
    pool.sweep(loop.time() + 0.06)
    assert failure(calls[1]) == "timeout"
    await done.wait(2)
    assert answer(calls[0])[2] == echoed("/first")
    # Had /waits been sent, it would reach the upstream before /after, on the one connection.
    after = pool.call(get("/after"), 5.0, done)
    await done.wait(3)
    assert [r.path for r in upstream.requests] == ["/first", "/after"]
    assert done.once([*calls, after])


# --- connection failures


@both_loops
async def test_connection_refused_fails_every_call(make: Make) -> None:
    """No server listening: every call fails with kind "connect", waiting ones too, without hanging."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.get_running_loop()
    piped = PipePool(spec_for(port), loop)  # all on one connection
    queued = PipePool(spec_for(port), loop, max_conns=1, depth=1)  # one on it, the others waiting
    done = Done()
    try:
        calls = [pool.call(get(f"/r{n}"), 5.0, done) for pool in (piped, queued) for n in range(3)]
        await done.wait(6)
        assert [failure(c) for c in calls] == ["connect"] * 6
        for pool in (piped, queued):
            assert pool.conns == [] and not pool.waiting
        assert done.once(calls)
    finally:
        piped.close(abort=True)
        queued.close(abort=True)


@both_loops
async def test_keepalive_race_retried_on_fresh_connection(make: Make) -> None:
    """A reused idle connection the upstream closes unanswered: the call is retried once, on a new one."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0 and req.index == 1:
            return "close"  # as an upstream does when its keep-alive timer fired just now
        writer.write(ok(req.path))
        return None

    upstream, pool = await make(respond)
    done = Done()
    first = pool.call(get("/first"), 2.0, done)
    await done.wait(1)
    await asyncio.sleep(0)  # the second call starts in a later iteration, on the now idle connection
    second = pool.call(get("/second"), 2.0, done)
    await done.wait(2)
    assert answer(first)[2] == echoed("/first")
    assert answer(second)[2] == echoed("/second")
    assert second.retried
    assert upstream.conns == 2
    assert upstream.paths(0) == ["/first", "/second"]
    assert upstream.paths(1) == ["/second"]
    assert done.once([first, second])


@both_loops
async def test_keepalive_race_with_close_right_after_answer(make: Make) -> None:
    """A call started as the upstream closes the connection after its last answer still succeeds."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        writer.write(ok(req.path))
        return "close" if req.conn == 0 else None

    upstream, pool = await make(respond)
    done = Done()
    chained: list[PipeCall] = []

    def then(call: PipeCall) -> None:
        done(call)
        if not chained:  # on the connection that is idle now, and closing
            chained.append(pool.call(get("/chained"), 2.0, done))

    first = pool.call(get("/first"), 2.0, then)
    await done.wait(2)
    assert answer(first)[2] == echoed("/first")
    assert answer(chained[0])[2] == echoed("/chained")
    assert upstream.conns == 2
    assert upstream.paths(1) == ["/chained"]
    assert done.once([first, chained[0]])


@both_loops
async def test_sweep_closes_idle_connections(make: Make) -> None:
    """sweep closes a connection idle for longer than idle_timeout, not before; the next call opens one."""
    upstream, pool = await make(idle_timeout=0.5)
    loop = asyncio.get_running_loop()
    done = Done()
    first = pool.call(get("/a"), 2.0, done)
    await done.wait(1)
    pool.sweep(loop.time() + 0.3)
    assert len(pool.conns) == 1
    kept = pool.call(get("/kept"), 2.0, done)  # answered on connection 0: the sweep left it open
    await done.wait(2)
    assert answer(kept)[2] == echoed("/kept")
    assert upstream.paths(0) == ["/a", "/kept"] and not upstream.ended
    pool.sweep(loop.time() + 0.6)
    assert pool.conns == []
    await eventually(lambda: 0 in upstream.ended, what="conn 0 closed")
    second = pool.call(get("/b"), 2.0, done)
    await done.wait(3)
    assert answer(second)[2] == echoed("/b")
    assert upstream.conns == 2
    assert done.once([first, kept, second])


@both_loops
async def test_sweep_keeps_busy_connections(make: Make) -> None:
    """sweep does not close a connection with a call in flight, however long ago it was last idle."""
    upstream, pool = await make(delay=0.05, idle_timeout=0.01)
    loop = asyncio.get_running_loop()
    done = Done()
    call = pool.call(get("/busy"), 5.0, done)
    await eventually(lambda: len(upstream.requests) == 1, what="1 requests upstream")
    pool.sweep(loop.time() + 1)
    await done.wait(1)
    assert answer(call)[2] == echoed("/busy")
    assert not upstream.ended


# --- close


@both_loops
async def test_close_graceful(make: Make) -> None:
    """close(): idle connections close now, a busy one after its answer; later calls fail at once."""
    upstream, pool = await make(lambda req, writer: slow_on("/slow", req, writer), depth=1, max_conns=2)
    done = Done()
    warm = [pool.call(get("/w1"), 2.0, done), pool.call(get("/w2"), 2.0, done)]
    await done.wait(2)
    assert upstream.conns == 2
    busy = pool.call(get("/slow"), 2.0, done)
    await eventually(lambda: any(r.path == "/slow" for r in upstream.requests), what="/slow sent")
    busy_conn = next(r.conn for r in upstream.requests if r.path == "/slow")
    pool.close()
    await eventually(lambda: (1 - busy_conn) in upstream.ended, what="the idle conn closed")
    assert busy_conn not in upstream.ended
    assert not busy.finished
    late = pool.call(get("/late"), 2.0, done)
    assert failure(late) == "connect"  # at once, in the call
    await done.wait(4)
    assert answer(busy)[2] == echoed("/slow")
    # closed after its answer
    await eventually(lambda: busy_conn in upstream.ended, what="the busy conn closed")
    assert pool.conns == []
    assert upstream.conns == 2
    assert [r.path for r in upstream.requests if r.path == "/late"] == []
    assert done.once([*warm, busy, late])


async def slow_on(path: str, req: Req, writer: asyncio.StreamWriter) -> str | None:
    if req.path == path:
        await asyncio.sleep(0.1)
    writer.write(ok(req.path))
    return None


@both_loops
async def test_close_graceful_fails_waiting_calls(make: Make) -> None:
    """close() fails the calls still waiting for room with kind "connect"; the one in flight finishes."""
    upstream, pool = await make(delay=0.05, depth=1, max_conns=1)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b", "/c")]
    pool.close()
    assert [failure(c) for c in calls[1:]] == ["connect", "connect"]
    await done.wait(3)
    assert answer(calls[0])[2] == echoed("/a")
    # The upstream sees the close after every request sent before it.
    await eventually(lambda: 0 in upstream.ended, what="conn 0 closed")
    assert [r.path for r in upstream.requests] == ["/a"]
    assert done.once(calls)


@both_loops
async def test_close_abort_cancels_without_done(make: Make) -> None:
    """close(abort=True) closes busy connections now and never calls done for the calls in flight."""
    upstream, pool = await make(delay=0.05)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b")]
    await eventually(lambda: len(upstream.requests) == 2, what="2 requests upstream")
    pool.close(abort=True)
    await eventually(lambda: 0 in upstream.ended, what="conn 0 closed")
    # The upstream has answered both (into the closed connection) and ended its connection task.
    await eventually(lambda: not upstream._tasks, what="the upstream to finish answering")
    assert done.calls == []
    assert all(c.finished and c.result is None and c.error is None for c in calls)
    assert pool.conns == []


@both_loops
async def test_close_abort_while_connecting(make: Make) -> None:
    """close(abort=True) before the connection opens: done is never called and nothing is sent."""
    upstream, pool = await make()
    done = Done()
    call = pool.call(get("/a"), 2.0, done)
    pool.close(abort=True)
    await settled(upstream, pool)
    assert done.calls == []
    assert call.finished
    assert upstream.requests == []


# --- a confused upstream


@both_loops
async def test_unsolicited_bytes_close_the_connection(make: Make) -> None:
    """Bytes arriving with no request outstanding close the connection; the next call opens a new one."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        writer.write(ok(req.path))
        if req.conn == 0:
            await writer.drain()
            await asyncio.sleep(0.03)
            writer.write(ok("/nobody-asked"))
        return None

    upstream, pool = await make(respond)
    done = Done()
    first = pool.call(get("/a"), 2.0, done)
    await done.wait(1)
    assert answer(first)[2] == echoed("/a")
    await eventually(lambda: 0 in upstream.ended, what="conn 0 closed")
    assert pool.conns == []
    second = pool.call(get("/b"), 2.0, done)
    await done.wait(2)
    assert answer(second)[2] == echoed("/b")
    assert upstream.conns == 2
    assert done.once([first, second])


@both_loops
async def test_plain_answers_skip_llhttp_between_responses_only(make: Make) -> None:
    """Between responses, a read's whole answers of the plain shape are read without llhttp (compiled
    build); llhttp gets the first one that is not plain (chunked, interim, cut by the read) and every byte
    after it, up to the end of the response it is inside. Reads are injected with chosen boundaries."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        return "hang"  # the test writes the answers itself, split as it chooses

    upstream, pool = await make(respond)
    done = Done()
    paths = [f"/p{n}" for n in range(7)]
    calls = [pool.call(get(p), 2.0, done) for p in paths]
    await eventually(lambda: len(upstream.requests) == 7, what="7 requests at the upstream")
    (conn,) = pool.conns
    fed = fed_to_parser(conn)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Path: /p2\r\n\r\n"
    chunked += b"8\r\necho /p2\r\n0\r\n\r\n"

    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok("/p4")
    r0, r1, r3, r5, r6 = (ok(p) for p in ("/p0", "/p1", "/p3", "/p5", "/p6"))
    reads = [r0 + r1 + chunked[:10], chunked[10:] + r3, interim, r5[:7], r5[7:], r6]
    for data in reads:
        conn.data_received(data)
    await done.wait(7)
    for call, path in zip(calls, paths, strict=True):
        status, headers, body = answer(call)
        assert (status, headers[b"x-path"], body) == (200, path.encode(), echoed(path))
    assert done.once(calls)
    if READ_PLAIN is None:  # the pure-Python build: llhttp reads everything
        assert fed == reads
    else:
        assert fed == [chunked[:10], chunked[10:] + r3, interim, r5[:7], r5[7:]]
    assert conn.got_bytes is False and conn.served == 7 and not conn.closed


@both_loops
async def test_crlf_between_answers_is_not_a_response_begun(make: Make) -> None:
    """CRLFs after an answer (llhttp skips them) start no response: a close then is the keep-alive race
    (the next call is sent again), not a response cut off."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        return "hang"

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done) for p in ("/a", "/b")]
    await eventually(lambda: len(upstream.requests) == 2, what="2 requests at the upstream")
    (conn,) = pool.conns
    conn.data_received(ok("/a") + b"\r\n")
    await done.wait(1)
    assert answer(calls[0])[2] == echoed("/a")
    assert conn.got_bytes is False


@both_loops
async def test_a_failing_done_fails_the_next_call_either_way(make: Make) -> None:
    """A caller's ``done`` that raises while an answer is read breaks the connection as a callback error
    inside llhttp does: the next call fails (protocol) and the connection closes, plain answer or not."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        return "hang"

    async def check(reads: list[bytes]) -> None:
        upstream, pool = await make(respond)
        done = Done()

        def boom(call: PipeCall) -> None:
            done(call)
            raise RuntimeError("the caller broke")

        calls = [pool.call(get("/a"), 2.0, boom), pool.call(get("/b"), 2.0, done)]
        await eventually(lambda: len(upstream.requests) == 2, what="2 requests at the upstream")
        (conn,) = pool.conns
        for data in reads:
            conn.data_received(data)
        await done.wait(2)
        assert answer(calls[0])[2] == echoed("/a")
        assert failure(calls[1]) == "protocol"
        assert conn.closed and done.once(calls)

    await check([ok("/a") + ok("/b")])  # read whole: plain in the compiled build
    await check([ok("/a")[:-1], ok("/a")[-1:] + ok("/b")])  # split: llhttp either way


@both_loops
async def test_bytes_after_the_last_answer_never_answer_a_call_sent_meanwhile(make: Make) -> None:
    """Bytes after the answer to the last call written, in its read (a response nobody asked for, whole or
    begun), close the connection: a call the answer's ``done`` sent meanwhile, queued on that connection
    but not yet written, is sent again on a new one and gets its own answer, not those bytes."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        if req.conn == 0:
            return "hang"  # the test writes conn 0's answers itself
        writer.write(ok(req.path))
        return None

    async def check(stray: bytes) -> None:
        upstream, pool = await make(respond)
        done = Done()
        later: list[PipeCall] = []

        def then_b(call: PipeCall) -> None:
            done(call)
            later.append(pool.call(get("/b"), 2.0, done))

        first = pool.call(get("/a"), 2.0, then_b)
        await eventually(lambda: len(upstream.requests) == 1, what="1 request at the upstream")
        (conn,) = pool.conns
        conn.data_received(ok("/a") + stray)
        await done.wait(2)
        assert answer(first)[2] == echoed("/a")
        assert (answer(later[0])[1][b"x-path"], answer(later[0])[2]) == (b"/b", echoed("/b")), stray
        assert not later[0].retried  # never sent on the confused connection: its one retry is left
        assert conn.closed and upstream.paths(1) == ["/b"] and upstream.paths(0) == ["/a"]
        assert done.once([first, *later])

    await check(b"HTTP/1.1 200 OK\r\n")  # begun: llhttp
    await check(ok("/stray"))  # whole and plain: READ_PLAIN in the compiled build
    await check(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n")  # a head whose body would be the next


def bytes_of(answer: bytes) -> Expected:
    """An expected answer known by its bytes only (no compared headers: anything else is read)."""
    return Expected(0, [], None, answer)


@both_loops
async def test_an_answer_that_is_its_expected_bytes_is_not_read(make: Make) -> None:
    """A call given ``expect`` (a shadow copy's primary answer) whose answer is those bytes exactly
    completes with ``same``, no result, and its latency, without being read (compiled build: compared in
    place between responses); an answer one byte off, or one llhttp reads (cut by the read, or after one
    it read), is read as any other. The pure-Python build reads every answer."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        return "hang"  # the test writes the answers itself

    upstream, pool = await make(respond)
    done = Done()
    paths = [f"/p{n}" for n in range(6)]
    answers = [ok(p) for p in paths]
    answers[1] = ok("/p1", b"X-Extra: 1\r\n")  # expected without the extra header
    expects: list[Expected | None] = [bytes_of(ok(p)) for p in paths]
    expects[5] = None  # no expectation: read
    calls = [pool.call(get(p), 2.0, done, tag=p, expect=e) for p, e in zip(paths, expects, strict=True)]
    await eventually(lambda: len(upstream.requests) == 6, what="6 requests at the upstream")
    (conn,) = pool.conns
    fed = fed_to_parser(conn)
    r0, r1, r2, r3, r4, r5 = answers
    reads = [r0 + r1, r2[:9], r2[9:] + r3, r4 + r5]
    for data in reads:
        conn.data_received(data)
    await done.wait(6)
    assert done.once(calls)
    compiled = READ_PLAIN is not None
    assert [c.same for c in calls] == [compiled, False, False, False, compiled, False]
    for call, path in zip(calls, paths, strict=True):
        if call.same:
            assert call.result is None and call.error is None
        else:
            status, headers, body = answer(call)
            assert (status, headers[b"x-path"], body) == (200, path.encode(), echoed(path))
    assert calls[1].result is not None and (b"X-Extra", b"1") in calls[1].result[1]
    assert calls[0].timed and calls[0].latency is not None and calls[0].latency >= 0
    assert fed == (reads if not compiled else [r2[:9], r2[9:] + r3])
    assert conn.served == 6 and not conn.closed and not conn.inflight


@both_loops
async def test_an_expected_answer_then_a_close_resends_the_rest(make: Make) -> None:
    """An answer taken as its expected bytes leaves the connection as a read one would: the calls behind
    it wait for theirs, and a close then sends them again on a new connection."""
    closed_once = False

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        nonlocal closed_once
        writer.write(ok(req.path))
        if req.path == "/a" and not closed_once:
            closed_once = True
            return "close"
        return None

    upstream, pool = await make(respond)
    done = Done()
    calls = [pool.call(get(p), 2.0, done, expect=bytes_of(ok(p))) for p in ("/a", "/b", "/c")]
    await done.wait(3)
    assert done.once(calls)
    compiled = READ_PLAIN is not None
    assert [c.same for c in calls] == [compiled] * 3
    if not compiled:
        assert [answer(c)[2] for c in calls] == [echoed(p) for p in ("/a", "/b", "/c")]
    assert upstream.conns == 2 and upstream.paths(1) == ["/b", "/c"]


@both_loops
async def test_an_answer_with_the_expected_status_body_and_compared_headers_is_not_read(make: Make) -> None:
    """A call expecting an answer by its status, body and compared headers (`Expected.compared`) takes an
    answer that has them as its own without reading it, whatever its other headers, names' case or
    bytes (compiled build: scanned in place); one differing in any of them, or ending the connection, is
    read. The pure-Python build reads every answer."""

    async def respond(req: Req, writer: asyncio.StreamWriter) -> str | None:
        return "hang"  # the test writes the answers itself

    def answer_of(headers: bytes, body: bytes = b'{"a":1}') -> bytes:
        return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (headers, len(body), body)

    upstream, pool = await make(respond)
    done = Done()
    expected = Expected(200, [(b"Content-Type", b"application/json"), (b"Date", b"Mon")], b'{"a":1}')
    expected.compared = (b"content-encoding", b"content-type")
    answers = [
        answer_of(b"Content-Type: application/json\r\nDate: Tue\r\n"),  # another Date: not compared
        answer_of(b"X-Other: 1\r\ncontent-type: application/json\r\n"),  # a header more, a name's case
        answer_of(b"Content-Type: text/plain\r\n"),  # a compared header differs
        answer_of(b"Content-Type: application/json\r\n", b'{"a":2}'),  # the body differs
        answer_of(b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"),  # an encoding more
        answer_of(b"Content-Type: application/json\r\nConnection: close\r\n"),  # ends the connection
    ]
    calls = [pool.call(get(f"/p{n}"), 2.0, done, expect=expected) for n in range(len(answers))]
    await eventually(lambda: len(upstream.requests) == len(answers), what="every request at the upstream")
    (conn,) = pool.conns
    conn.data_received(b"".join(answers))
    await done.wait(len(answers))
    assert done.once(calls)
    compiled = READ_PLAIN is not None
    assert [c.same for c in calls] == [compiled, compiled, False, False, False, False]
    assert [answer(c)[2] for c in calls[2:]] == [b'{"a":1}', b'{"a":2}', b'{"a":1}', b'{"a":1}']
    assert conn.served == len(answers) and conn.closed  # the last answer ended it
