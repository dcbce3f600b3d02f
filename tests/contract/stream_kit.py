"""Clients of the post event stream and the WebSocket, for the contract, end-to-end and bench code.

Everything waits for an event with a deadline (``asyncio.timeout``), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from contract_stack import Stack
from support.waiting import eventually

EVENT_RE = re.compile(rb"id: ([0-9]+-[0-9]+)\nevent: post\ndata: (.*)")
WS_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
)
# The documented publish step (docs/API.md, Events): what a service does when a post is created.
PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'post', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""


# Short stream timers for tests: heartbeats well below the gateway's body idle timeout (the upstream's
# `timeout` in routes.yaml) and pings and send timeouts that fire within a test.
STREAM_ENV = {"STREAM_HEARTBEAT_S": "1", "WS_PING_S": "2", "WS_SEND_TIMEOUT_S": "1"}


class StreamStack(Stack):
    """The contract stack with the stream's timers shortened (STREAM_ENV)."""

    def env(self, name: str, port: int, metrics_port: int) -> dict[str, str]:
        env = super().env(name, port, metrics_port)
        env.update(STREAM_ENV)
        return env


@dataclass
class SseEvent:
    """One server-sent message as raw bytes (without its blank line), and the post event's id and data."""

    raw: bytes
    id: str | None
    data: bytes | None


class SseClient:
    """A raw ``GET /api/v1/posts/stream`` on a socket, de-chunked, split at blank lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer, self.head = reader, writer, head
        self._body = b""
        self._chunked = b"transfer-encoding: chunked" in head.lower()

    @classmethod
    async def open(cls, port: int, last_event_id: str | None = None, path: str = "/api/v1/posts/stream",
                   deadline: float = 10.0) -> SseClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n"
        writer.write(request.encode())
        async with asyncio.timeout(deadline):
            head = await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer, head)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def _more(self) -> None:
        if not self._chunked:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("stream closed")
            self._body += data
            return
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            raise EOFError("stream ended")
        chunk = await self.reader.readexactly(size + 2)
        self._body += chunk[:-2]

    async def next(self, deadline: float = 10.0) -> SseEvent:
        """The next message (event, comment or retry), waiting at most `deadline` seconds for it."""
        async with asyncio.timeout(deadline):
            while b"\n\n" not in self._body:
                await self._more()
        raw, _, self._body = self._body.partition(b"\n\n")
        match = EVENT_RE.fullmatch(raw)
        return SseEvent(raw, match[1].decode() if match else None, match[2] if match else None)

    async def next_event(self, deadline: float = 10.0) -> SseEvent:
        """The next post event, skipping comments (heartbeats) and ``retry:``."""
        async with asyncio.timeout(deadline):
            while (msg := await self.next(deadline)).id is None:
                pass
        return msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def raw_ws(port: int, token: str, *, rcvbuf: int | None = None, read_limit: int = 2**16,
                 deadline: float = 10.0) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake on a plain socket (the caller reads and pongs, or not): head, reader, writer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=read_limit)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(WS_HANDSHAKE.format(path="/api/v1/ws", key=key, token=token).encode())
    async with asyncio.timeout(deadline):
        head = await reader.readuntil(b"\r\n\r\n")
    return head, reader, writer


def gauges(base_url: str) -> dict[str, Any]:
    """``GET /health/streams`` of one service process."""
    r = httpx.get(f"{base_url}/health/streams", timeout=10.0)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def wait_gauges(base_url: str, check: Any, deadline: float = 20.0) -> dict[str, Any]:
    """Poll the gauges until ``check(gauges)`` holds; fail with the last reading at the deadline."""
    last: dict[str, Any] = {}

    async def matching() -> dict[str, Any] | None:
        nonlocal last
        last = await asyncio.to_thread(gauges, base_url)
        return last if check(last) else None

    found: dict[str, Any] = await eventually(matching, what="the stream gauges to match", within=deadline,
                                             last=lambda: last)  # fmt: skip
    return found


def publish(client: redis.Redis, prefix: str, data: bytes, history_max: int = 10_000) -> str:
    """Publish one event exactly as the services do (used to send events larger than any post)."""
    raw = client.eval(PUBLISH, 2, f"{prefix}posts:stream", f"{prefix}posts:live", history_max, data)
    return raw.decode() if isinstance(raw, bytes) else str(raw)
