"""Access control for the admin port: a bearer token for everything but the health probes.

/routes, /metrics and /report show the route table, traffic and stored response samples, so they must not
answer whoever reaches the port. With a token configured (``STRANGLER_ADMIN_TOKEN`` or
``--admin-token-file``) every admin path except /healthz and /readyz (what load balancers and Kubernetes
probe) needs ``Authorization: Bearer <token>``. Without one the admin port must listen on loopback, unless
``--admin-public`` says that its network is trusted (see `check_admin_exposure`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["OPEN_PATHS", "check_admin_exposure", "is_loopback", "token_middleware"]

OPEN_PATHS = frozenset(("/healthz", "/readyz"))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_admin_exposure(host: str, token: str, public: bool) -> str | None:
    """Why this admin configuration is refused, or None when it is acceptable."""
    if token or public or is_loopback(host):
        return None
    return (f"the admin port would listen on {host}, reachable from other machines, with no access control: "
            "set STRANGLER_ADMIN_TOKEN (or --admin-token-file FILE) to require a bearer token, listen on "
            "127.0.0.1, or pass --admin-public if that network is trusted")  # fmt: skip


def token_middleware(token: str) -> Middleware:
    """An aiohttp middleware answering 401 (JSON) unless the request carries the bearer token."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            message = "the admin port needs Authorization: Bearer <token>"
            return web.json_response(
                {"error": {"code": "unauthorized", "message": message}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="strangler-admin"'},
            )
        return await handler(request)

    return require_token
