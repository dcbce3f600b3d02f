"""Auth endpoints: register, login (rate limited, bcrypt -> argon2id upgrade), refresh, logout, me."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from aiohttp import web

from services import errors, tokens
from services.auth import repo
from services.auth.models import LOGIN, REFRESH, REGISTER, tokens_json
from services.cache import Hit
from services.context import Ctx, json_response, no_content
from services.db import Executor
from services.passwords import hash_password, is_bcrypt, verify_password
from services.users import repo as users_repo
from services.users.models import user_json
from services.users.routes import name_suffix
from services.validation import validate


def client_ip(request: web.Request, trusted_hops: int) -> str:
    """The client address as Express computes it with ``trust proxy = trusted_hops``."""
    peer = request.remote or ""
    if trusted_hops == 0:
        return peer
    header = ",".join(request.headers.getall("X-Forwarded-For", []))
    # proxy-addr: comma separated, spaces trimmed, empty entries dropped, read from the right.
    forwarded = [part.strip(" ") for part in header.split(",")]
    chain = [peer, *reversed([part for part in forwarded if part])]
    return chain[min(trusted_hops, len(chain) - 1)]


async def issue_tokens(ctx: Ctx, user_id: int, db: Executor | None = None) -> dict[str, Any]:
    """A new access token and a refresh token stored through `db` (default: the request's executor)."""
    ttl = ctx.settings.access_token_ttl
    access = tokens.issue_access(ctx.settings.jwt_secret, user_id, ttl, int(time.time()))
    refresh, refresh_hash = tokens.new_refresh_token()
    await repo.store_refresh(db or ctx.db, user_id, refresh_hash, ctx.settings.refresh_token_ttl)
    return tokens_json(access, ttl, refresh)


async def register(ctx: Ctx) -> web.Response:
    """POST /api/v1/auth/register"""
    values = validate(await ctx.json_body(), REGISTER)
    hashed = await hash_password(ctx.hash_pool, values["password"])
    async with ctx.transaction() as tx:  # no user without its first refresh token
        user = await users_repo.create(tx, values["email"].lower(), values["name"], hashed)
        issued = await issue_tokens(ctx, user["id"], tx)
    return json_response(201, {"user": user_json(user, name_suffix(ctx)), "tokens": issued})


def _retry_after(hits: list[tuple[Hit, int]], window: int) -> int:
    # The longest wait among the counters over their limit (a counter without TTL: the window).
    return max(
        (max(hit.ttl if hit.ttl >= 0 else window, 1) for hit, limit in hits if hit.count > limit), default=0
    )


async def login(ctx: Ctx) -> web.Response:
    """POST /api/v1/auth/login"""
    values = validate(await ctx.json_body(), LOGIN)
    settings = ctx.settings
    email = values["email"].lower()
    account = hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()
    ip = client_ip(ctx.request, settings.trusted_hops)
    by_account, by_ip = await ctx.cache.login_hits(account, ip, settings.login_rate_window)
    # Checked before the password, so a locked-out guesser learns nothing and costs no hashing.
    limits = [(by_account, settings.login_rate_limit_account), (by_ip, settings.login_rate_limit_ip)]
    wait = _retry_after(limits, settings.login_rate_window)
    if wait:
        raise errors.RateLimited(wait)
    row = await users_repo.credentials(ctx.db, email)
    stored: str | None = None if row is None else row["password_hash"]
    if not await verify_password(ctx.hash_pool, stored, values["password"]) or row is None:
        raise errors.InvalidCredentials()
    if stored is not None and is_bcrypt(stored):
        upgraded = await hash_password(ctx.hash_pool, values["password"])
        await users_repo.upgrade_hash(ctx.db, row["id"], stored, upgraded)
    return json_response(200, await issue_tokens(ctx, row["id"]))


async def refresh(ctx: Ctx) -> web.Response:
    """POST /api/v1/auth/refresh (rotation: the presented token is revoked)."""
    values = validate(await ctx.json_body(), REFRESH)
    async with ctx.transaction() as tx:  # the old token stays valid unless the new one is stored
        user_id = await repo.rotate(tx, tokens.refresh_hash(values["refresh_token"]))
        issued = None if user_id is None else await issue_tokens(ctx, user_id, tx)
    if issued is None:
        raise errors.InvalidRefreshToken()
    return json_response(200, issued)


async def logout(ctx: Ctx) -> web.Response:
    """POST /api/v1/auth/logout: revoke this access token (Redis) and all the user's refresh tokens."""
    me = await ctx.principal()
    await ctx.cache.revoke(me.jti, max(1, math.ceil(me.exp - time.time())))
    await repo.revoke_all(ctx.db, me.user_id)
    return no_content()


async def me(ctx: Ctx) -> web.Response:
    """GET /api/v1/auth/me (a token whose user was deleted is 401)."""
    principal = await ctx.principal()
    return json_response(200, user_json(principal.user, name_suffix(ctx)))


ROUTES = (
    ("POST", "/api/v1/auth/register", register),
    ("POST", "/api/v1/auth/login", login),
    ("POST", "/api/v1/auth/refresh", refresh),
    ("POST", "/api/v1/auth/logout", logout),
    ("GET", "/api/v1/auth/me", me),
)
