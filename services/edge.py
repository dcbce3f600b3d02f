"""The HTTP behaviour around every handler: route labels, no-store, 304s, CORS and compression.

The order follows the legacy app's middleware, so headers come out the same: the handler's answer
(errors included, from ``error_middleware``), then ``Cache-Control: no-store`` on personal routes,
then Express's conditional GET (a fresh GET/HEAD 2xx becomes 304), then ``Vary: Accept-Encoding`` and
compression. The CORS headers are added as each response is sent (``on_response_prepare``), so a
streamed answer gets them too. A CORS preflight is answered inside ``error_middleware`` so it gets a
request id and an access-log line, as in Express.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.compression import compress
from services.conditional import NO_STORE, is_fresh
from services.context import Ctx
from services.cors import CorsPolicy
from services.http import Handler
from services.settings import Settings

# Responses carrying tokens or the caller's own account: never stored by any cache.
NO_STORE_ROUTES = frozenset({
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/auth/me"),
})  # fmt: skip
_DROPPED_BY_304 = frozenset({"content-type", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """The matched route: its template (the metrics label) and whether it must not be stored."""

    template: str
    no_store: bool


ROUTE = web.RequestKey("route", RouteInfo)


def labelled(routes: Iterable[tuple[str, str, Handler]]) -> tuple[tuple[str, str, Handler], ...]:
    """The routes with each handler wrapped to record its :class:`RouteInfo` before it runs."""

    def wrap(info: RouteInfo, handler: Handler) -> Handler:
        async def run(ctx: Ctx) -> web.StreamResponse:
            ctx.request[ROUTE] = info
            return await handler(ctx)

        return run

    return tuple(
        (method, template, wrap(RouteInfo(template, (method, template) in NO_STORE_ROUTES), handler))
        for method, template, handler in routes
    )


def _not_modified(response: web.Response) -> web.Response:
    # Express's res.send: status 304, no body, and no Content-Type / Content-Length / Transfer-Encoding.
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROPPED_BY_304]
    out = web.Response(status=304)
    for key, value in headers:
        out.headers.add(key, value)
    return out


def outer_middleware(settings: Settings) -> Middleware:
    """no-store, conditional GET and compression, applied to the final response."""
    threshold = settings.compression_threshold

    @web.middleware
    async def edge(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if response.prepared or not isinstance(response, web.Response):
            return response  # streamed (SSE, WebSocket): its headers are already on the wire
        info = request.get(ROUTE)
        if info is not None and info.no_store:
            response.headers["Cache-Control"] = NO_STORE
        if request.method in ("GET", "HEAD") and 200 <= response.status < 300:
            headers = response.headers
            if is_fresh(request.headers, headers.get("ETag"), headers.get("Last-Modified")):
                response = _not_modified(response)
        compress(request, response, threshold)
        return response

    return edge


def cors_on_prepare(settings: Settings) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook adding the CORS headers to every response as it is sent,
    streamed ones (SSE, WebSocket handshakes) included, like Express's cors middleware does."""
    policy = CorsPolicy(settings.cors)

    async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
        policy.decorate(request, response)

    return add_cors


def preflight_middleware(settings: Settings) -> Middleware:
    """Answer a CORS preflight (OPTIONS from an allowed origin) with 204 on any path."""
    policy = CorsPolicy(settings.cors)

    @web.middleware
    async def preflight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if policy.enabled and policy.is_preflight(request):
            return policy.preflight()
        return await handler(request)

    return preflight
