"""A loopback upstream for the shadow-storage soak: ``python bench/soak_upstream.py PORT legacy|new``.

``GET /items/{id}`` answers ``{"id", "name"}``. On the ``new`` side half the answers differ only in
``name`` (the common difference) and the other half also carry a key never seen before, so every one of
them is a new diff signature with a new path: what made the shadow storage grow without bound.
"""

from __future__ import annotations

import itertools
import sys

from aiohttp import web

_counter = itertools.count()


def app(side: str) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = next(_counter)
        name = "Alice" if side == "legacy" else "Bob"
        doc: dict[str, object] = {"id": request.match_info["id"], "name": name}
        if side == "new" and n % 2:
            doc[f"extra_{n}"] = n  # a one-off signature and path
        return web.json_response(doc)

    application = web.Application()
    application.router.add_get("/items/{id}", item)
    return application


if __name__ == "__main__":
    web.run_app(app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
