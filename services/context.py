"""What a handler sees: :class:`Ctx` (request, path params, executor, cache view) and the app keys.

The checks a request goes through are in the contract's order: route -> auth -> content-type -> size ->
JSON parse -> validation; :meth:`Ctx.principal` and :meth:`Ctx.json_body` are the middle steps.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from services import errors, tokens
from services.cache import Cache, RequestCache
from services.db import Executor
from services.fairpool import FairPool
from services.settings import Settings

BODY_LIMIT = 102_400
ID_RE = re.compile(r"[1-9][0-9]{0,17}")
# "Bearer", one or more spaces, the token, nothing after it (scheme case-insensitive).
_BEARER_RE = re.compile(r"bearer +(\S+)", re.IGNORECASE)

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", FairPool)
CACHE = web.AppKey("cache", Cache)
HASH_POOL = web.AppKey("hash_pool", ThreadPoolExecutor)
STARTED = web.AppKey("started", float)
DRY_RUN = web.RequestKey("dry_run", bool)
# How a principal's user row is loaded (the users feature provides it; the core imports no feature).
UserLoader = Callable[[Executor, int], Awaitable[Any]]
LOAD_USER: web.AppKey[UserLoader] = web.AppKey("load_user")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: user id, the token's id and expiry (for logout), and the user's row."""

    user_id: int
    jti: str
    exp: float
    user: Any


class Ctx:
    """One request's view of the service."""

    __slots__ = ("cache", "db", "params", "request", "settings")

    def __init__(
        self,
        request: web.Request,
        params: dict[str, str],
        db: Executor,
        cache: RequestCache,
        settings: Settings,
    ) -> None:
        self.request = request
        self.params = params
        self.db = db
        self.cache = cache
        self.settings = settings

    @property
    def hash_pool(self) -> ThreadPoolExecutor:
        """The thread pool password hashing runs in."""
        return self.request.app[HASH_POOL]

    def path_id(self, name: str = "id") -> int | None:
        """The path parameter as an id, or None when it is not a valid id (then: 404 of the resource)."""
        raw = self.params.get(name, "")
        return int(raw) if ID_RE.fullmatch(raw) else None

    async def claims(self) -> tokens.Claims:
        """The first half of auth: ``Authorization: Bearer <access token>`` verified and not revoked
        (no database). The caller must still check the user exists (:meth:`principal` does, or a
        statement that needs the user row anyway, answering 401 when it finds none)."""
        match = _BEARER_RE.fullmatch(self.request.headers.get("Authorization", ""))
        if match is None:
            raise errors.Unauthorized()
        claims = tokens.verify(self.settings.jwt_secret, match[1], time.time())
        if claims is None or await self.cache.is_revoked(claims.jti):
            raise errors.Unauthorized()
        return claims

    async def principal(self, claims: tokens.Claims | None = None) -> Principal:
        """Verify the bearer token (unless `claims` did already) and load its user; every failure is
        one 401. A deleted user's tokens die with it, although the JWT itself is still well-formed."""
        if claims is None:
            claims = await self.claims()
        user = await self.request.app[LOAD_USER](self.db, claims.user_id)
        if user is None:
            raise errors.Unauthorized()
        return Principal(claims.user_id, claims.jti, claims.exp, user)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Executor]:
        """One connection for several statements (saves a pool round per statement; no transaction)."""
        db: Any = self.db
        if isinstance(db, FairPool):
            async with db.acquire() as conn:
                yield conn
        else:
            yield db

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """Run several statements atomically: a pooled connection in a transaction, or, in a dry run,
        a savepoint inside the request's (rolled-back) transaction."""
        db: Any = self.db
        if isinstance(db, FairPool):
            async with db.acquire() as conn, conn.transaction():
                yield conn
        else:
            async with db.transaction():
                yield db

    async def json_body(self) -> Any:
        """Content-type (415), size (413) and JSON parse (400) checks; return the parsed value."""
        request = self.request
        ctype = request.headers.get("Content-Type", "")
        # Trim spaces and tabs only (HTTP's OWS), as the legacy app does: Unicode spaces are not OWS.
        if ctype.partition(";")[0].strip(" \t").lower() != "application/json":
            raise errors.UnsupportedMediaType()
        # Bodies are never decompressed (Node does not; aiohttp's is switched off in services/wire.py).
        encoding = ", ".join(request.headers.getall("Content-Encoding", ()))
        if encoding.strip(" \t").lower() not in ("", "identity"):
            raise errors.UnsupportedMediaType(errors.NO_CONTENT_ENCODING)
        length = request.content_length
        if length is not None and length > BODY_LIMIT:
            raise errors.PayloadTooLarge()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.PayloadTooLarge() from None
        if len(raw) > BODY_LIMIT:
            raise errors.PayloadTooLarge()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.InvalidJson() from None


def json_response(status: int, data: Any) -> web.Response:
    """A compact JSON response with the contract's exact content type."""
    return web.Response(status=status, body=orjson.dumps(data), headers={"Content-Type": errors.JSON_TYPE})


def no_content() -> web.Response:
    """A 204 with no body and no content type."""
    return web.Response(status=204)
