"""`proxy.upstream.sender`: send a request copy, be called back; on real loopback upstreams."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support.upstreams import EchoUpstream, Handler, RawUpstream, read_request

from proxy.http1.errors import UpstreamError
from proxy.http1.headers import Headers
from proxy.routing.table import UpstreamSpec
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.sender import FetcherSender, PoolSender, Sender, Sent, sender_for

StartRaw = Callable[[Handler], Awaitable[RawUpstream]]


def pool_for(port: int, base_path: str = "") -> UpstreamPool:
    """A pool for a loopback upstream."""
    spec = UpstreamSpec(
        name="up", url=f"http://127.0.0.1:{port}{base_path}", scheme="http", host="127.0.0.1", port=port,
        base_path=base_path, connect_timeout=1.0, total_timeout=5.0, pool_size=4,
    )  # fmt: skip
    return UpstreamPool(spec)


class Inbox:
    """The ``done`` callback: keeps what finished, and wakes a waiter when enough has."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._changed = asyncio.Event()

    def __call__(self, sent: Sent) -> None:
        self.sent.append(sent)
        self._changed.set()

    async def wait(self, count: int) -> list[Sent]:
        async with asyncio.timeout(5):
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.sent


@pytest.fixture
async def senders() -> AsyncIterator[Callable[[UpstreamPool], PoolSender]]:
    """Make senders on pools; all closed (aborted) at the end."""
    made: list[PoolSender] = []

    def make(pool: UpstreamPool) -> PoolSender:
        sender = sender_for(pool, asyncio.get_running_loop())
        assert isinstance(sender, PoolSender)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close(abort=True)
        sender.pool.close()


def echoed(sent: Sent) -> dict[str, object]:
    """The echo upstream's summary of the request, from a successful copy."""
    assert sent.error is None, sent.error
    assert sent.result is not None
    status, _, body = sent.result
    assert status == 200
    summary: dict[str, object] = json.loads(body)
    return summary


async def test_a_get_without_body_is_pipelined_and_timed(
    echo: EchoUpstream, senders: Callable[[UpstreamPool], PoolSender]
) -> None:
    """A bodyless GET goes on the pipelined pool; done gets the answer, the caller's tag and a latency."""
    sender = senders(pool_for(echo.port, "/base"))
    inbox = Inbox()
    sender.send("GET", "/a?b=1", [(b"X-Test", b"1"), (b"Host", b"dropped")], b"", 5.0, inbox, tag="t1")
    (sent,) = await inbox.wait(1)
    summary = echoed(sent)
    assert summary["method"] == "GET" and summary["path"] == "/base/a?b=1"
    assert ["Host", f"127.0.0.1:{echo.port}"] in summary["headers"]
    assert ["X-Test", "1"] in summary["headers"]
    assert sent.tag == "t1"
    assert sent.latency is not None and sent.latency >= 0
    assert not sender.calls and sender.pool.idle == []  # not a buffered call on the pool


@pytest.mark.parametrize(
    ("method", "body"), [("POST", b'{"a":1}'), ("GET", b"x"), ("HEAD", b""), ("DELETE", b"")]
)
async def test_anything_else_is_a_buffered_call(
    echo: EchoUpstream, senders: Callable[[UpstreamPool], PoolSender], method: str, body: bytes
) -> None:
    """Bodies and other methods go as buffered calls on the pool itself, with their latency."""
    sender = senders(pool_for(echo.port))
    inbox = Inbox()
    sender.send(method, "/b", [], body, 5.0, inbox, tag=method)
    assert len(sender.calls) == 1
    (sent,) = await inbox.wait(1)
    assert sent.error is None and sent.result is not None and sent.result[0] == 200
    if method != "HEAD":
        summary = echoed(sent)
        assert (summary["method"], summary["body_len"]) == (method, len(body))
    assert sent.tag == method and sent.latency is not None
    assert len(sender.pool.idle) == 1  # the pool's connection, back for the next call


async def test_send_get_from_joined_header_lines(
    echo: EchoUpstream, senders: Callable[[UpstreamPool], PoolSender]
) -> None:
    """send_get takes the header lines as the gateway holds them, or none at all."""
    sender = senders(pool_for(echo.port))
    inbox = Inbox()
    sender.send_get(b"/lines", b"X-A: 1\r\nX-B: 2", 5.0, inbox, tag=1)
    sender.send_get(b"/none", b"", 5.0, inbox, tag=2)
    sent = sorted(await inbox.wait(2), key=lambda s: s.tag)
    first, second = echoed(sent[0]), echoed(sent[1])
    assert first["path"] == "/lines" and ["X-B", "2"] in first["headers"]
    assert second["path"] == "/none"


async def test_sweep_fails_copies_past_their_deadline(
    raw_upstream: StartRaw, senders: Callable[[UpstreamPool], PoolSender]
) -> None:
    """An upstream that never answers: the owner's sweep fails both kinds of copy with a timeout."""
    arrived = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await reader.read()  # answer nothing until the client closes

    upstream = await raw_upstream(stall)
    sender = senders(pool_for(upstream.port))
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    sender.send("GET", "/piped", [], b"", 1.0, inbox, tag="piped")
    sender.send("POST", "/called", [], b"x", 1.0, inbox, tag="called")
    async with asyncio.timeout(5):
        await arrived.wait()
    sender.sweep(loop.time())  # nothing is late yet
    assert inbox.sent == []
    sender.sweep(loop.time() + 2.0)  # a sweep after the deadline: a clock later than the calls' limit
    sent = await inbox.wait(2)
    assert sorted(s.tag for s in sent) == ["called", "piped"]
    for one in sent:
        assert isinstance(one.error, UpstreamError) and one.error.kind == "timeout"
        assert one.result is None and one.latency is None
    sender.sweep(loop.time())
    assert not sender.calls and not sender.busy


async def test_refused_connections_fail_both_paths(senders: Callable[[UpstreamPool], PoolSender]) -> None:
    """Nothing listening: a pipelined and a buffered copy both end with a connect error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = senders(pool_for(port))
    inbox = Inbox()
    sender.send("GET", "/a", [], b"", 5.0, inbox)
    sender.send("PUT", "/b", [], b"x", 5.0, inbox)
    for sent in await inbox.wait(2):
        assert isinstance(sent.error, UpstreamError) and sent.error.kind == "connect"


async def test_a_closed_sender_refuses_new_copies(
    echo: EchoUpstream, senders: Callable[[UpstreamPool], PoolSender]
) -> None:
    """After close, every new copy fails at once (connect), without touching the upstream."""
    sender = senders(pool_for(echo.port))
    sender.close()
    inbox = Inbox()
    sender.send("GET", "/a", [], b"", 5.0, inbox)
    sender.send("POST", "/b", [], b"x", 5.0, inbox)
    sent = await inbox.wait(2)
    assert [s.error.kind for s in sent if s.error is not None] == ["connect", "connect"]
    assert echo.seen.requests == []


async def test_abort_drops_copies_in_flight_without_calling_back(
    raw_upstream: StartRaw, senders: Callable[[UpstreamPool], PoolSender]
) -> None:
    """close(abort=True) (shutdown) drops what is in flight: done never runs for it."""
    arrived = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await reader.read()

    upstream = await raw_upstream(stall)
    sender = senders(pool_for(upstream.port))
    inbox = Inbox()
    sender.send("POST", "/a", [], b"x", 5.0, inbox)
    async with asyncio.timeout(5):
        await arrived.wait()
    sender.close(abort=True)
    sender.sweep(asyncio.get_running_loop().time() + 10.0)
    assert inbox.sent == [] and not sender.calls


class Wrapped:
    """Any object with UpstreamPool.fetch's signature; here it delegates to a real pool, or hangs."""

    def __init__(self, pool: UpstreamPool, hang: asyncio.Event | None = None) -> None:
        self.pool = pool
        self.hang = hang
        self.calls: list[tuple[str, str, Headers]] = []

    async def fetch(
        self, method: str, path_qs: str, headers: Headers, body: bytes, timeout: float  # noqa: ASYNC109
    ) -> tuple[int, Headers, bytes]:
        self.calls.append((method, path_qs, headers))
        if self.hang is not None:
            await self.hang.wait()
        return await self.pool.fetch(method, path_qs, headers, body, timeout)


async def test_other_fetchers_get_a_sender_of_tasks(echo: EchoUpstream) -> None:
    """sender_for gives any other fetcher the same interface: each copy a task, under its deadline."""
    pool = pool_for(echo.port)
    never = asyncio.Event()
    fetcher, hanging = Wrapped(pool), Wrapped(pool, hang=never)
    loop = asyncio.get_running_loop()
    sender: Sender = sender_for(fetcher, loop, name="wrapped")
    slow = sender_for(hanging, loop, name="hanging")
    assert isinstance(sender, FetcherSender) and sender.name == "wrapped"
    inbox = Inbox()
    try:
        sender.send_get(b"/g", b"X-A: 1", 5.0, inbox, tag="g")
        slow.send("GET", "/slow", [], b"", 0.05, inbox, tag="slow")
        sent = {s.tag: s for s in await inbox.wait(2)}
        assert echoed(sent["g"])["path"] == "/g" and sent["g"].latency is not None
        assert fetcher.calls == [("GET", "/g", [(b"X-A", b"1")])]
        error = sent["slow"].error
        assert isinstance(error, UpstreamError) and error.kind == "timeout" and "hanging" in error.message
        sender.close()
        sender.send("GET", "/late", [], b"", 5.0, inbox, tag="late")
        late = (await inbox.wait(3))[2]
        assert late.error is not None and late.error.kind == "connect"
    finally:
        sender.close(abort=True)
        slow.close(abort=True)
        pool.close()
