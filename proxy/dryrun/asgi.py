"""The dry-run middleware for ASGI services (Starlette, FastAPI, any ASGI 3 application).

    from proxy.dryrun import MemoryNonceStore, Verifier
    from proxy.dryrun.asgi import DryRunMiddleware, is_dry_run

    app = Starlette(routes=..., middleware=[Middleware(DryRunMiddleware, verifier=verifier)])
    # FastAPI: app.add_middleware(DryRunMiddleware, verifier=verifier)

    async def create_order(request):
        if is_dry_run(request.scope):       # signed by the gateway: do the work, then roll it back
            ...

A request without the header passes untouched. With it, the whole body is read, verified, and then
replayed to the application as one ``http.request`` message (so the app reads it as usual); an invalid
header is answered 403 with a JSON error; a valid one sets ``scope["state"]["strangler_dry_run"]``
(Starlette's ``request.state.strangler_dry_run``) and adds ``X-Strangler-Dry-Run: applied`` to the
response. Pure ASGI: no framework import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proxy.dryrun.protocol import HEADER
from proxy.dryrun.verifier import APPLIED, REFUSAL_BODY, Verifier

__all__ = ["STATE_KEY", "DryRunMiddleware", "is_dry_run"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "strangler_dry_run"
_HEADER_LOWER = HEADER.lower().encode("ascii")
_APPLIED_PAIR = (_HEADER_LOWER, APPLIED.encode("ascii"))
TOO_LARGE_BODY = (
    b'{"error": {"code": "DRY_RUN_BODY_TOO_LARGE", "message": "a dry run\'s body is larger than this '
    b'service accepts (DryRunMiddleware max_body); the gateway only shadows bodies up to its body_cap"}}'
)


def is_dry_run(scope: Scope) -> bool:
    """True inside a verified dry run (``request.scope`` in Starlette and FastAPI)."""
    state = scope.get("state")
    return bool(state and state.get(STATE_KEY))


class DryRunMiddleware:
    """Verifies ``X-Strangler-Dry-Run`` with ``verifier`` before the wrapped ASGI ``app`` runs.

    The body must be read whole to check its hash: past ``max_body`` bytes the request is answered 413
    (the gateway never shadows a body larger than its ``body_cap``, 1 MiB by default).
    """

    def __init__(self, app: ASGIApp, verifier: Verifier, max_body: int = 10 << 20) -> None:
        self.app = app
        self.verifier = verifier
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k.lower() == _HEADER_LOWER), None)
        if header is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, TOO_LARGE_BODY)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        # The target as the gateway signed it: the raw path as sent, then the query.
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string", b"")
        path_qs = (path + b"?" + query if query else path).decode("latin-1")
        if not await self.verifier.check(header.decode("latin-1"), scope["method"], path_qs, body):
            await _answer(send, 403, REFUSAL_BODY)
            return
        scope = dict(scope)
        scope["state"] = {**(scope.get("state") or {}), STATE_KEY: True}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        async def mark(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), _APPLIED_PAIR]
            await send(message)

        await self.app(scope, replay, mark)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
