"""The dry-run middleware for aiohttp services.

    from proxy.dryrun import MemoryNonceStore, Verifier
    from proxy.dryrun.web import DRY_RUN, dry_run_middleware

    verifier = Verifier(os.environ["STRANGLER_DRY_RUN_SECRET"], MemoryNonceStore())
    app = web.Application(middlewares=[dry_run_middleware(verifier)])

    async def create_order(request):
        if request.get(DRY_RUN):            # signed by the gateway: do the work, then roll it back
            ...

A request without the header passes untouched. With it, the body is read (aiohttp keeps it, so the
handler reads the same bytes), the header is verified, and the request is refused with a 403 JSON error
when it is invalid; otherwise ``request[DRY_RUN]`` is True and the response carries
``X-Strangler-Dry-Run: applied``. Rolling back is the handler's part (docs/ADOPTING.md).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.dryrun.protocol import HEADER
from proxy.dryrun.verifier import APPLIED, REFUSAL_BODY, Verifier

__all__ = ["DRY_RUN", "dry_run_middleware"]

DRY_RUN = web.RequestKey("strangler_dry_run", bool)


def dry_run_middleware(verifier: Verifier) -> Middleware:
    """An aiohttp middleware that verifies dry runs with ``verifier`` (put it first in the list)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(HEADER)
        if header is None:
            return await handler(request)
        body = await request.read()  # cached by aiohttp: the handler reads these bytes again
        if not await verifier.check(header, request.method, request.raw_path, body):
            return web.Response(status=403, body=REFUSAL_BODY, content_type="application/json")
        request[DRY_RUN] = True
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # an error answer is a dry run's answer too
            exc.headers[HEADER] = APPLIED
            raise
        response.headers[HEADER] = APPLIED
        return response

    return middleware
