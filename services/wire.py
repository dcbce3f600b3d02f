"""The HTTP wire, made to behave like the legacy app's Node.js server (docs/API.md, "The HTTP edge").

aiohttp and Node differ below the application: header size limits, what the parser refuses and how,
request body decompression and the ``Server`` header. This module holds those rules, so ``app.py`` only
wires them in (Express's conditional GET, ``If-None-Match: *`` included, is services/conditional.py's):

- :data:`HANDLER_ARGS`: the parser limits (high enough that :func:`wire_middleware` decides) and no
  request body decompression (``Content-Encoding`` is checked by ``Ctx.json_body``, never applied);
- :func:`wire_middleware`: the request head budget (431);
- :func:`drop_server_header`: an ``on_response_prepare`` hook (legacy sends no ``Server``);
- :class:`Runner`: an ``AppRunner`` whose connections answer a request aiohttp cannot parse with the
  contract's JSON error instead of aiohttp's plain-text page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from services import errors

log = logging.getLogger("services.wire")

# Request target + header names + header values, in bytes, as Node's maxHeaderSize counts them
# (separators and line ends not counted). The gateway allows a head of the same size.
MAX_HEADER_BYTES = 65_536

HANDLER_ARGS: dict[str, Any] = {
    # One line or field can never exceed the total, and each header costs at least one byte: with
    # these values aiohttp's own limits only trip where the total budget is blown anyway.
    "max_line_size": MAX_HEADER_BYTES,
    "max_field_size": MAX_HEADER_BYTES,
    "max_headers": MAX_HEADER_BYTES,
    # Node never decodes a request body; a Content-Encoding is refused (415) by the body check.
    "auto_decompress": False,
}

def head_size(request: web.BaseRequest) -> int:
    """Bytes of the request head as Node counts them: target, then every header's name and value."""
    size = len(request.raw_path.encode("utf-8", "surrogateescape"))
    for name, value in request.raw_headers:
        size += len(name) + len(value)
    return size


def _json_error(exc: errors.ApiError) -> web.Response:
    # Connection: close spelled out: aiohttp answers an unparsed request as HTTP/1.0, Node as 1.1.
    headers = {"Content-Type": errors.JSON_TYPE, "Connection": "close"}
    response = _NoServerResponse(status=exc.status, body=exc.body(), headers=headers)
    response.force_close()  # as Node does after a client error: the stream may be out of sync
    return response


@web.middleware
async def wire_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """431 for a request head over budget, before anything else, like Node's parser."""
    if head_size(request) >= MAX_HEADER_BYTES:
        return _json_error(errors.HeadersTooLarge())
    return await handler(request)


async def drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: remove the ``Server`` header aiohttp adds (legacy sends none)."""
    response.headers.popall("Server", None)


class _NoServerResponse(web.Response):
    """A response written outside the application (no ``on_response_prepare``), without ``Server``."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self._headers.popall("Server", None)


class _JsonErrorHandler(RequestHandler):
    """A connection whose unparseable requests get the contract's JSON error."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or request.writer.output_size > 0:  # not a parse error: aiohttp's answer
            return super().handle_error(request, status, exc, message)
        log.info("unparseable request refused", extra={"reason": message or repr(exc)})
        too_large = isinstance(exc, LineTooLong) or (message or "").startswith("Too many headers")
        return _json_error(errors.HeadersTooLarge() if too_large else errors.BadRequest())


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` serving each connection with :class:`_JsonErrorHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The Server is built by the application (handler args, request factory); only the class of
        # connection handler it creates changes. _Server adds no state, so re-classing is safe.
        server.__class__ = _Server
        return server
