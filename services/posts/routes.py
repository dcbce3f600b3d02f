"""Posts endpoints: list (+ by author, + by user), create, get, patch and delete (author only)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from services import errors
from services.conditional import cacheable
from services.context import DRY_RUN, Ctx, Principal, json_response, no_content
from services.errors import JSON_TYPE
from services.posts import repo
from services.posts.models import CREATE, PATCH, post_json
from services.stream.routes import HUB
from services.users import repo as users_repo
from services.validation import page_query, query_of, validate

log = logging.getLogger("services.posts")


def _page(rows: list[Any], names: dict[int, str], limit: int, offset: int) -> dict[str, Any]:
    return {
        "items": [post_json(row, names.get(row["author_id"])) for row in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(rows) > limit else None,
    }


async def list_posts(ctx: Ctx) -> web.Response:
    """GET /api/v1/posts"""
    limit, offset, author_id = page_query(query_of(ctx.request.rel_url), author=True)
    rows = await repo.page_with_authors(ctx.db, limit + 1, offset, author_id)
    names = {row["author_id"]: row["author_name"] for row in rows}
    return json_response(200, _page(rows, names, limit, offset))


async def list_user_posts(ctx: Ctx) -> web.Response:
    """GET /api/v1/users/{id}/posts (404 when the user does not exist)."""
    limit, offset, _ = page_query(query_of(ctx.request.rel_url))
    user_id = ctx.path_id()
    if user_id is None:
        raise errors.NotFound(errors.USER_NOT_FOUND)
    async with ctx.connection() as db:
        user = await users_repo.get(db, user_id)
        if user is None:
            raise errors.NotFound(errors.USER_NOT_FOUND)
        # The one author is already loaded: no author query at all.
        rows = await repo.page(db, limit + 1, offset, user_id)
    return json_response(200, _page(rows, {user["id"]: user["name"]}, limit, offset))


async def create_post(ctx: Ctx) -> web.Response:
    """POST /api/v1/posts: one statement checks the author exists, inserts and returns the author name.

    Auth's 401 still wins over every body error (415/413/400/422): a body error is only answered
    after the user lookup confirms the token's user exists. A valid body skips that lookup, because
    the insert itself finds no author and then answers the same 401.
    """
    claims = await ctx.claims()
    try:
        values = validate(await ctx.json_body(), CREATE)
    except errors.ApiError:
        await ctx.principal(claims)  # raises 401 for a deleted user, before the body's error
        raise
    row = await repo.create(ctx.db, claims.user_id, values["title"], values["body"])
    post = post_json(row, row["author_name"])
    planted = ctx.settings.test_diff
    if planted == "post.create.missing":
        del post["updated_at"]
    body = orjson.dumps(post)
    if not ctx.request.get(DRY_RUN):
        try:  # the post exists either way: a stream outage must not turn its creation into an error
            await ctx.request.app[HUB].publish(body)
        except (RedisError, OSError) as exc:
            log.error("post not published to the stream", extra={"post_id": row["id"], "err": repr(exc)})
    status = 200 if planted == "post.create.status" else 201
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE})


async def get_post(ctx: Ctx) -> web.Response:
    """GET /api/v1/posts/{id}"""
    post_id = ctx.path_id()
    row = None if post_id is None else await repo.get(ctx.db, post_id)
    if row is None:
        raise errors.NotFound(errors.POST_NOT_FOUND)
    post = post_json(row, row["author_name"])
    if ctx.settings.test_diff == "post.get.title":
        post["title"] += "!"
    # No Last-Modified: the post embeds its author's name, which changes without the post's updated_at.
    return cacheable(json_response(200, post), ctx.settings.cache_max_age)


async def _own_post(ctx: Ctx, me: Principal) -> int:
    post_id = ctx.path_id()
    author = None if post_id is None else await repo.author_of(ctx.db, post_id)
    if post_id is None or author is None:
        raise errors.NotFound(errors.POST_NOT_FOUND)
    if author != me.user_id:
        raise errors.Forbidden(errors.NOT_YOUR_POST)
    return post_id


async def patch_post(ctx: Ctx) -> web.Response:
    """PATCH /api/v1/posts/{id}"""
    me = await ctx.principal()
    values = validate(await ctx.json_body(), PATCH, partial=True)
    post_id = await _own_post(ctx, me)
    row = await repo.update(ctx.db, post_id, values.get("title"), values.get("body"))
    if row is None:
        raise errors.NotFound(errors.POST_NOT_FOUND)
    post = post_json(row, row["author_name"])
    if ctx.settings.test_diff == "post.patch.precision":  # whole seconds: "...:00Z", not "...:00.123Z"
        for key in ("created_at", "updated_at"):
            post[key] = post[key].rpartition(".")[0] + "Z"
    return json_response(200, post)


async def delete_post(ctx: Ctx) -> web.Response:
    """DELETE /api/v1/posts/{id}"""
    me = await ctx.principal()
    post_id = await _own_post(ctx, me)
    if not await repo.delete(ctx.db, post_id):
        raise errors.NotFound(errors.POST_NOT_FOUND)
    return no_content()


ROUTES = (
    ("GET", "/api/v1/posts", list_posts),
    ("POST", "/api/v1/posts", create_post),
    ("GET", "/api/v1/posts/{id}", get_post),
    ("PATCH", "/api/v1/posts/{id}", patch_post),
    ("DELETE", "/api/v1/posts/{id}", delete_post),
    ("GET", "/api/v1/users/{id}/posts", list_user_posts),
)
