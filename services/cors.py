"""Cross-origin resource sharing, header for header what the legacy app's ``cors`` middleware sends.

Only a request whose ``Origin`` is allowed gets CORS headers; a preflight is an ``OPTIONS`` request
from an allowed origin that names ``Access-Control-Request-Method`` (any other OPTIONS stays 404).
While CORS is on, every response carries ``Vary: Origin``, because what it says depends on the origin.
"""

from __future__ import annotations

from aiohttp import web

from services.settings import CorsSettings


def origin_of(request: web.Request) -> str | None:
    """The Origin header as Node reads it: repeated lines joined with ", " (so never an allowed origin)."""
    values = request.headers.getall("Origin", [])
    return ", ".join(values) if values else None


class CorsPolicy:
    """The configured policy with its header values joined once."""

    __slots__ = (
        "_expose", "_headers", "_max_age", "_methods", "_origins", "credentials", "enabled", "wildcard",
    )  # fmt: skip

    def __init__(self, settings: CorsSettings) -> None:
        self.enabled = settings.enabled
        self.wildcard = settings.origins == ("*",)
        self.credentials = settings.credentials
        self._origins = frozenset(settings.origins)
        self._methods = ",".join(settings.methods)
        self._headers = ",".join(settings.headers)
        self._expose = ",".join(settings.exposed)
        self._max_age = str(settings.max_age)

    def allowed(self, origin: str | None) -> bool:
        """Whether `origin` (the request's Origin header) may read responses."""
        return origin is not None and (self.wildcard or origin in self._origins)

    def is_preflight(self, request: web.Request) -> bool:
        """An OPTIONS request from an allowed origin asking for a method."""
        return (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and self.allowed(origin_of(request))
        )

    def preflight(self) -> web.Response:
        """204 with what the browser asked about (origin headers are added by :meth:`decorate`)."""
        headers = {}
        if self._methods:
            headers["Access-Control-Allow-Methods"] = self._methods
        if self._headers:
            headers["Access-Control-Allow-Headers"] = self._headers
        if self._max_age:
            headers["Access-Control-Max-Age"] = self._max_age
        return web.Response(status=204, headers=headers)

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add Vary: Origin and, for an allowed origin, the response's CORS headers (in place)."""
        headers = response.headers
        # cors sets Vary before the response exists; other Vary fields are appended after it.
        current = headers.get("Vary")
        headers["Vary"] = "Origin" if current is None else f"Origin, {current}"
        origin = origin_of(request)
        if not self.allowed(origin):
            return
        if request.method == "OPTIONS" and "Access-Control-Request-Method" not in request.headers:
            return  # not a preflight: a plain 404, like any OPTIONS
        assert origin is not None
        headers["Access-Control-Allow-Origin"] = "*" if self.wildcard else origin
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if self._expose:
            headers["Access-Control-Expose-Headers"] = self._expose
