"""Loopback test upstreams for the data-path tests, and a small raw HTTP/1.1 client.

`echo_app` is an aiohttp app that reports what it received (method, path, headers, body hash) and has
endpoints that stream, stall, emit server-sent events, upgrade to WebSocket, redirect and set cookies.
`RawUpstream` runs an arbitrary ``async handler(reader, writer)`` for misbehaving upstreams (resets, bad
framing, stalls). `RawClient` speaks HTTP/1.1 over a plain socket with an independent, hand-written
response reader, so tests can send ambiguous bytes and see exactly what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

GZIPPED = gzip.compress(b'{"hello": "world"}' * 50, mtime=0)


@dataclass
class Seen:
    """What the echo upstream saw, in order: one dict per request, plus connection ids."""

    requests: list[dict[str, object]] = field(default_factory=list)
    # /sse?hold=1 sends its first event, then waits for this before the rest: a test can read the first
    # event while the stream is certainly unfinished, then release it (no timing involved).
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _summary(request: web.Request, body: bytes) -> dict[str, object]:
    transport = request.transport
    peer = transport.get_extra_info("sockname") if transport else None
    return {
        "method": request.method,
        "path": request.raw_path,
        "version": f"{request.version.major}.{request.version.minor}",
        "headers": [[k, v] for k, v in _decode(request.raw_headers)],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_len": len(body),
        "conn": id(transport),
        "local": list(peer) if peer else None,
    }


def _decode(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def echo_app(seen: Seen) -> web.Application:
    """The well-behaved upstream: echoes and streams (routes below, any method)."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        summary = _summary(request, body)
        seen.requests.append(summary)
        return web.json_response(summary, headers={"X-Upstream": "echo"})

    async def mirror(request: web.Request) -> web.StreamResponse:
        """Streams the request body back (Content-Length framing when ?cl=1, else chunked)."""
        seen.requests.append({"method": request.method, "path": request.raw_path})
        if request.query.get("cl"):
            body = await request.read()
            return web.Response(body=body, content_type="application/octet-stream")
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        async for chunk in request.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        """Reads a (possibly huge) body without keeping it; reports its size and hash."""
        digest = hashlib.sha256()
        hashing = not request.query.get("nohash")
        size = 0
        async for chunk in request.content.iter_any():
            if hashing:
                digest.update(chunk)
            size += len(chunk)
        seen.requests.append({"method": request.method, "path": request.raw_path, "body_len": size})
        return web.json_response({"body_len": size, "body_sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        """Streams ?n= bytes (a repeating 64 KiB block), chunked or with Content-Length (?cl=1)."""
        total = int(request.query["n"])
        block = bytes(range(256)) * 256
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if request.query.get("cl"):
            response.content_length = total
        await response.prepare(request)
        progress: dict[str, object] = {"path": request.raw_path, "sent": 0}
        seen.requests.append(progress)
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            await response.write(piece)
            sent += len(piece)
            progress["sent"] = sent
        await response.write_eof()
        return response

    async def sse(request: web.Request) -> web.StreamResponse:
        """Three events, ?gap= seconds apart (or, with ?hold=1, the rest once seen.release is set)."""
        gap = float(request.query.get("gap", "0.5"))
        hold = request.query.get("hold") == "1"
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for n in range(3):
            await response.write(f"id: {n}\ndata: event {n}\n\n".encode())
            if hold and n == 0:
                await asyncio.wait_for(seen.release.wait(), 30)
            elif not hold:
                await asyncio.sleep(gap)  # a slow event source: the delay is the behaviour
        await response.write_eof()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        """Echoes text and binary messages, prefixed with 'echo:' for text."""
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await socket.send_str("echo:" + message.data)
            elif message.type == WSMsgType.BINARY:
                await socket.send_bytes(message.data)
        return socket

    async def redirect(request: web.Request) -> web.Response:
        seen.requests.append({"method": request.method, "path": request.raw_path})
        raise web.HTTPFound("/echo/redirected")

    async def cookie(request: web.Request) -> web.Response:
        seen.requests.append(_summary(request, b""))
        response = web.Response(text="cookie set")
        response.set_cookie("session", "abc123")
        return response

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        seen.requests.append({"method": request.method, "path": request.raw_path})
        if code in (204, 304):
            return web.Response(status=code, headers={"ETag": '"v1"'})
        return web.Response(status=code, text=f"status {code}")

    async def hop(request: web.Request) -> web.Response:
        """Answers with hop-by-hop headers the gateway must remove."""
        return web.Response(
            text="hop",
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Trailer",
                "Upgrade": "h2c",
                "X-End-To-End": "kept",
                "X-Request-Id": "upstream-made-this-up",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/mirror{tail:.*}", mirror)
    app.router.add_route("*", "/upload{tail:.*}", upload)
    app.router.add_get("/download{tail:.*}", download)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/cookie", cookie)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/hop", hop)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class EchoUpstream:
    """`echo_app` served on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.seen = Seen()
        self.runner = web.AppRunner(echo_app(self.seen), access_log=None)
        self.port = 0

    async def start(self) -> EchoUpstream:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        await self.runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """A loopback server running ``handler`` per connection; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> RawUpstream:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Read one request (head, lower-cased headers, Content-Length body) in a raw upstream."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return lines[0], headers, body


@dataclass
class Response:
    """A response read by `RawClient`: status, headers in order, de-chunked body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        found = None
        for key, value in self.headers:
            if key.lower() == name.lower():
                found = value
        return found

    def names(self) -> set[str]:
        """Lower-cased header names present."""
        return {key.lower() for key, _ in self.headers}

    def json(self) -> dict[str, object]:
        """The body parsed as JSON."""
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class RawClient:
    """An HTTP/1.1 client over one TCP connection, reading responses with its own small parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send a simple request (Host added, Content-Length when there is a body) and read the answer."""
        lines = [f"{method} {path} HTTP/1.1", "Host: gateway.test"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.response(head=method == "HEAD")

    async def response(self, head: bool = False) -> Response:
        """Read one response; ``head``: it answers a HEAD (no body whatever the headers say)."""
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
        response = Response(int(status), reason[0] if reason else "", headers, b"")
        code = int(status)
        if head or code in (204, 304) or 100 <= code < 200:
            return response
        length = response.header("content-length")
        if response.header("transfer-encoding") == "chunked":
            response.chunked = True
            parts = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                assert await self.reader.readexactly(2) == b"\r\n"
            response.body = b"".join(parts)
        elif length is not None:
            response.body = await self.reader.readexactly(int(length))
        else:
            response.body = await self.reader.read()
        return response

    async def at_eof(self, wait: float = 2.0) -> bool:
        """True if the server closes the connection (reads nothing more) within ``wait`` seconds."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except ConnectionError:
            return True  # a reset is a close too
        except TimeoutError:
            return False
        return data == b""

    def close(self) -> None:
        self.writer.transport.abort()
