"""The benchmarks' upstream: a minimal HTTP/1.1 keep-alive server (uvloop + httptools), one process.

It answers every request with the same 70-byte JSON body, as cheaply as Python can, so the proxy under
test and not the upstream dominates the CPU budget. `GET /__bench/count` returns how many requests it
has answered (not counting itself), which the shadow benchmark uses to prove shadow copies arrived.

    python bench/upstream.py PORT [express]

With ``express``, the answers carry the head an Express app sends with such a body (seven headers:
X-Powered-By, Content-Type with a charset, Content-Length, ETag, Date, Connection, Keep-Alive) instead of
the minimal two: what reading a real upstream's head costs (`bench/callgrind.py --express-head`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import uvloop

BODY = b'{"id":1,"email":"alice@example.com","name":"Alice","posts":[1,2,3,45]}'
assert len(BODY) == 70, len(BODY)
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
_EXPRESS_HEAD = (
    b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nETag: W/\"46-2T1a5bYtq0W3uXbNfAXzT5ZMvWc\"\r\n"
    b"Date: Mon, 07 Dec 2026 16:00:00 GMT\r\n"
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
)
RESPONSE = _HEAD % len(BODY) + b"\r\n" + BODY
RESPONSE_CLOSE = _HEAD % len(BODY) + b"Connection: close\r\n\r\n" + BODY
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
COUNT_PATH = b"/__bench/count"


class Counter:
    """Requests answered by this process (a plain int: one thread, one loop)."""

    served = 0


class UpstreamProtocol(asyncio.Protocol):
    """One client connection; the parser calls back into it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(BAD_REQUEST)
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url  # httptools may deliver the target in pieces

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.url == COUNT_PATH:
            body = b'{"served":%d}' % Counter.served
            transport.write(_HEAD % len(body) + b"\r\n" + body)
            return
        Counter.served += 1
        if self.parser.should_keep_alive():
            transport.write(RESPONSE)
        else:
            transport.write(RESPONSE_CLOSE)
            transport.close()


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Entry point: `python bench/upstream.py PORT [express]`."""
    global RESPONSE
    if sys.argv[2:] == ["express"]:
        RESPONSE = _EXPRESS_HEAD % len(BODY) + b"\r\n" + BODY
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
