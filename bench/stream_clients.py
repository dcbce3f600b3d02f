"""Cheap load clients for the post event stream and the WebSocket: thousands per process, loopback only.

Each client keeps counters (bytes, post events, heartbeats or pings) and the longest gap between two
heartbeats (pings for sockets), which is what "heartbeats on time" is judged by. The WebSocket client
answers pings with pongs, as a browser does. No parsing beyond what the counters need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from dataclasses import dataclass, field

EVENT_MARK = b"\nevent: post\n"
HEARTBEAT_MARK = b": heartbeat\n\n"


@dataclass
class Counters:
    """What one client has seen."""

    events: int = 0
    beats: int = 0
    max_gap: float = 0.0
    last_beat: float = field(default_factory=time.monotonic)
    closed: bool = False

    def beat(self) -> None:
        now = time.monotonic()
        self.max_gap = max(self.max_gap, now - self.last_beat)
        self.last_beat, self.beats = now, self.beats + 1


class SseLoad:
    """One ``GET /api/v1/posts/stream`` reading until closed."""

    def __init__(self) -> None:
        self.c = Counters()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(b"GET /api/v1/posts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(30.0):
            head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {head[:80]!r}")
        self.c.last_beat = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        try:
            while data := await reader.read(65536):
                data = tail + data  # a mark may straddle two reads (chunk framing sits between messages)
                self.c.events += data.count(EVENT_MARK)
                for _ in range(data.count(HEARTBEAT_MARK)):
                    self.c.beat()
                tail = data[-16:]
                if EVENT_MARK in tail or HEARTBEAT_MARK in tail:
                    tail = b""
        except (ConnectionError, OSError):
            pass
        self.c.closed = True

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


class WsLoad:
    """One authenticated ``GET /api/v1/ws``: counts text frames and pings, answers every ping."""

    def __init__(self) -> None:
        self.c = Counters()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, token: str) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((
            "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode())
        async with asyncio.timeout(30.0):
            head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"socket refused: {head[:80]!r}")
        self.c.last_beat = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                size = b1 & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(size)
                opcode = b0 & 0x0F
                if opcode == 0x9 and self.writer is not None:  # ping -> masked pong with the same payload
                    self.c.beat()
                    mask = os.urandom(4)
                    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                elif opcode == 0x1:
                    self.c.events += 1
                elif opcode == 0x8:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        self.c.closed = True

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


async def open_many(factory: list[SseLoad | WsLoad], port: int, token: str, parallel: int = 100) -> None:
    """Open every client, at most `parallel` handshakes at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(client: SseLoad | WsLoad) -> None:
        async with gate:
            if isinstance(client, WsLoad):
                await client.open(port, token)
            else:
                await client.open(port)

    await asyncio.gather(*(one(c) for c in factory))


async def close_all(clients: list[SseLoad | WsLoad]) -> None:
    """Reset every connection and wait for the readers to finish."""
    for client in clients:
        client.abort()
    tasks = [c.task for c in clients if c.task is not None]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
