"""Express-like routing, the dry-run switch, and the one middleware that maps errors to responses.

aiohttp's own router is case-sensitive and answers 405; Express matches paths case-insensitively,
ignores one trailing slash and, with a catch-all handler, answers 404 for any unserved method. So one
aiohttp catch-all route hands every request to :class:`Router`, which does what Express does.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import unquote

from aiohttp import web

from proxy.dryrun import HEADER, Verifier
from services import errors
from services.cache import Cache
from services.context import CACHE, DRY_RUN, POOL, SETTINGS, Ctx
from services.db import rolled_back
from services.logs import REQUEST_ID

Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]
DRY_RUN_HEADER = HEADER
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Echoed only when it is printable ASCII: Node and aiohttp would each re-encode other bytes differently.
_REQUEST_ID_RE = re.compile(r"[\x20-\x7e]+")

log = logging.getLogger("services.http")
access_log = logging.getLogger("services.access")


class Router:
    """Method + path -> handler, matching raw path segments case-insensitively, like Express."""

    def __init__(self, routes: Iterable[tuple[str, str, Handler]]) -> None:
        self._static: dict[str, dict[str, Handler]] = {}
        self._dynamic: list[tuple[tuple[str, ...], dict[str, Handler]]] = []
        for method, template, handler in routes:
            segments = tuple(template.lower().split("/"))
            if any(s.startswith("{") for s in segments):
                for known, table in self._dynamic:
                    if known == segments:
                        table[method] = handler
                        break
                else:
                    self._dynamic.append((segments, {method: handler}))
            else:
                self._static.setdefault(template.lower(), {})[method] = handler

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and decoded path params; NotFound("route not found") otherwise (never 405)."""
        path = raw_path[:-1] if len(raw_path) > 1 and raw_path.endswith("/") else raw_path
        params: dict[str, str] = {}
        table = self._static.get(path.lower())
        if table is None:
            table = self._match_dynamic(path, params)
        if table is not None:
            handler = table.get(method)
            if handler is None and method == "HEAD":  # Express serves HEAD with the GET handler
                handler = table.get("GET")
            if handler is not None:
                return handler, params
        raise errors.NotFound(errors.ROUTE_NOT_FOUND)

    def _match_dynamic(self, path: str, params: dict[str, str]) -> dict[str, Handler] | None:
        parts = path.split("/")
        for segments, table in self._dynamic:
            if len(segments) != len(parts):
                continue
            found: dict[str, str] = {}
            for want, got in zip(segments, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    found[want[1:-1]] = _decode_param(got) if "%" in got else got
                elif want != got.lower():
                    break
            else:
                params.update(found)
                return table
        return None


def _decode_param(raw: str) -> str:
    # JavaScript's decodeURIComponent: a malformed escape or non-UTF-8 bytes fail, and then no route
    # can serve the path (Express's router answers that request as unroutable).
    if _BAD_ESCAPE_RE.search(raw):
        raise errors.NotFound(errors.ROUTE_NOT_FOUND)
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise errors.NotFound(errors.ROUTE_NOT_FOUND) from None


class _CacheNonces:
    """The library's `proxy.dryrun.NonceStore` over the service's Redis cache (``dryrun:<nonce>`` keys)."""

    __slots__ = ("_cache",)

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def claim(self, nonce: str, ttl: int) -> bool:
        return await self._cache.first_use(f"dryrun:{nonce}", ttl)


async def check_dry_run(request: web.Request, secret: str | None, header: str, now: float) -> None:
    """Raise Forbidden unless `header` signs this very request (method, target, body, time) and its
    nonce is used for the first time (remembered in Redis for the signature's lifetime)."""
    if secret is None:
        raise errors.Forbidden(errors.BAD_DRY_RUN)
    try:
        body = await request.read()  # aiohttp keeps it: the handler reads the same bytes
    except web.HTTPRequestEntityTooLarge:
        raise errors.PayloadTooLarge() from None
    # The verification is the library's (proxy.dryrun), as any other service's; the rollback and the
    # error shape are this service's own.
    verifier = Verifier(secret, _CacheNonces(request.app[CACHE]), clock=lambda: now)
    if not await verifier.check(header, request.method, request.raw_path, body):
        raise errors.Forbidden(errors.BAD_DRY_RUN)


def make_dispatch(router: Router) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler behind the catch-all route."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler, params = router.resolve(request.method, request.rel_url.raw_path)
        app = request.app
        settings = app[SETTINGS]
        header = request.headers.get(DRY_RUN_HEADER)
        if header is None:
            return await handler(Ctx(request, params, app[POOL], app[CACHE].live, settings))
        await check_dry_run(request, settings.dry_run_secret, header, time.time())
        request[DRY_RUN] = True
        # The whole request on one connection, in a transaction that is always rolled back.
        async with rolled_back(app[POOL]) as conn:
            return await handler(Ctx(request, params, conn, app[CACHE].dry, settings))

    return dispatch


def error_response(exc: errors.ApiError) -> web.Response:
    """The response for a domain error: its status, its JSON body, its extra headers."""
    headers = {"Content-Type": errors.JSON_TYPE, **exc.headers()}
    return web.Response(status=exc.status, body=exc.body(), headers=headers)


def _from_aiohttp(exc: web.HTTPException) -> errors.ApiError:
    # Only raised by aiohttp itself (our handlers raise domain errors): translate at the boundary.
    if exc.status == 413:
        return errors.PayloadTooLarge()
    if exc.status in (404, 405):
        return errors.NotFound(errors.ROUTE_NOT_FOUND)
    if exc.status == 400:
        return errors.InvalidJson()
    return errors.Internal()


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id in and out, domain errors -> the one error shape, unexpected errors -> 500, access log."""
    # Repeated: joined with ", " as Node joins it.
    request_id = ", ".join(request.headers.getall("X-Request-Id", ()))
    if not _REQUEST_ID_RE.fullmatch(request_id):  # empty, or not printable ASCII: as if absent
        request_id = str(uuid.uuid4())
    REQUEST_ID.set(request_id)
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except errors.ApiError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        response = error_response(_from_aiohttp(exc))
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        response = error_response(errors.Internal())
    response.headers["X-Request-Id"] = request_id
    if request.get(DRY_RUN):
        response.headers[DRY_RUN_HEADER] = "applied"
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
    return response
