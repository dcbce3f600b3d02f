"""Users endpoints: create, list, get, patch and delete (self only). No SQL here: see repo.py."""

from __future__ import annotations

from aiohttp import web

from services import errors
from services.conditional import cacheable
from services.context import Ctx, Principal, json_response, no_content
from services.passwords import hash_password
from services.users import repo
from services.users.models import CREATE, PATCH, user_json
from services.validation import page_query, query_of, validate


def name_suffix(ctx: Ctx) -> str:
    """ "!" under the test-only SERVICES_TEST_DIFF=user.name switch, else ""."""
    return "!" if ctx.settings.test_diff == "user.name" else ""


async def create_user(ctx: Ctx) -> web.Response:
    """POST /api/v1/users"""
    values = validate(await ctx.json_body(), CREATE)
    hashed = await hash_password(ctx.hash_pool, values["password"])
    row = await repo.create(ctx.db, values["email"].lower(), values["name"], hashed)
    return json_response(201, user_json(row, name_suffix(ctx)))


async def list_users(ctx: Ctx) -> web.Response:
    """GET /api/v1/users"""
    limit, offset, _ = page_query(query_of(ctx.request.rel_url))
    rows = await repo.page(ctx.db, limit + 1, offset)
    suffix = name_suffix(ctx)
    return json_response(
        200,
        {
            "items": [user_json(row, suffix) for row in rows[:limit]],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if len(rows) > limit else None,
        },
    )


async def get_user(ctx: Ctx) -> web.Response:
    """GET /api/v1/users/{id}"""
    user_id = ctx.path_id()
    row = None if user_id is None else await repo.get(ctx.db, user_id)
    if row is None:
        raise errors.NotFound(errors.USER_NOT_FOUND)
    # updated_at moves on every change of the user, so it is an exact Last-Modified.
    response = json_response(200, user_json(row, name_suffix(ctx)))
    return cacheable(response, ctx.settings.cache_max_age, row["updated_at"])


async def _own_user(ctx: Ctx, me: Principal) -> int:
    # Existence before ownership (the contract's order): a stranger's id is 403, no such id is 404.
    user_id = ctx.path_id()
    if user_id is None:
        raise errors.NotFound(errors.USER_NOT_FOUND)
    if user_id != me.user_id:
        if await repo.exists(ctx.db, user_id):
            raise errors.Forbidden(errors.NOT_YOUR_USER)
        raise errors.NotFound(errors.USER_NOT_FOUND)
    return user_id


async def patch_user(ctx: Ctx) -> web.Response:
    """PATCH /api/v1/users/{id}"""
    me = await ctx.principal()
    values = validate(await ctx.json_body(), PATCH, partial=True)
    user_id = await _own_user(ctx, me)
    hashed = None
    if "password" in values:
        hashed = await hash_password(ctx.hash_pool, values["password"])
    email = values["email"].lower() if "email" in values else None
    row = await repo.update(ctx.db, user_id, values.get("name"), email, hashed)
    if row is None:
        raise errors.NotFound(errors.USER_NOT_FOUND)
    return json_response(200, user_json(row, name_suffix(ctx)))


async def delete_user(ctx: Ctx) -> web.Response:
    """DELETE /api/v1/users/{id}"""
    me = await ctx.principal()
    user_id = await _own_user(ctx, me)
    if not await repo.delete(ctx.db, user_id):
        raise errors.NotFound(errors.USER_NOT_FOUND)
    return no_content()


ROUTES = (
    ("POST", "/api/v1/users", create_user),
    ("GET", "/api/v1/users", list_users),
    ("GET", "/api/v1/users/{id}", get_user),
    ("PATCH", "/api/v1/users/{id}", patch_user),
    ("DELETE", "/api/v1/users/{id}", delete_user),
)
