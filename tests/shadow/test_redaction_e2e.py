"""Secrets planted in requests and responses never reach Redis or PostgreSQL through shadowing."""

from __future__ import annotations

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from proxy.shadow.redis_pg import RedisPgStore

from .shadow_rig import Backend, RigFactory, routes_text

MARK = "PLANTED"  # every planted secret contains this; none may be found in storage


def responder(side: str) -> object:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/text":
            text = f"user=a&password={MARK}-text-{side}&n={side}"
            return web.Response(text=text, content_type="text/plain")
        doc = {
            "name": f"Alice-{side}",
            "access_token": f"{MARK}-access-{side}",
            "user": {"password_hash": f"{MARK}-hash-{side}", "id": 1},
            "nested": [{"client_secret": f"{MARK}-client-{side}"}],
            "echo_auth": request.headers.get("Authorization", ""),
        }
        if side == "new":
            doc["extra"] = {"refresh_token": f"{MARK}-refresh"}
        response = web.Response(body=orjson.dumps(doc), content_type="application/json")
        response.headers["Set-Cookie"] = f"sid={MARK}-cookie-{side}; HttpOnly"
        return response

    return handle


async def test_no_secret_stored(
    make_rig: RigFactory, backends: tuple[Backend, Backend], redis_url: str, redis_prefix: str, shadow_db: str
) -> None:
    """Scan every Redis key/value under the prefix and every column of every row: zero planted secrets."""
    legacy, new = backends
    legacy.handler, new.handler = responder("legacy"), responder("new")  # type: ignore[assignment]
    routes = (
        "  - {name: acct, match: {methods: [GET, POST], path: /acct}, target: legacy,"
        " shadow: {sample: 1.0, writes: true}, compare: {headers: [content-type, set-cookie]}}\n"
        "  - {name: text, match: {methods: [GET], path: /text}, target: legacy, shadow: {sample: 1.0}}\n"
    )
    store = await RedisPgStore.connect(redis_url, shadow_db, redis_prefix)
    try:
        rig = await make_rig(routes_text(legacy, new, routes, "aa_sample: 1.0"), store=store)
        headers = {"Authorization": f"Bearer {MARK}-bearer", "Cookie": f"session={MARK}-session"}
        for _ in range(3):
            assert (await rig.get(f"/acct?token={MARK}-q1&api_key={MARK}-q2&x=1", headers=headers))[0] == 200
            assert (await rig.get("/text"))[0] == 200
        body = orjson.dumps({"password": f"{MARK}-pw", "name": "a"})
        post_headers = {**headers, "Content-Type": "application/json"}
        status, _, _ = await rig.request("POST", f"/acct?secret={MARK}-q3", data=body, headers=post_headers)
        assert status == 200
        await rig.shadower.drain()
        assert any(MARK.encode() in r["body"] for r in new.seen)  # the secrets really went through

        client = aioredis.Redis.from_url(redis_url)
        try:
            dumped = []
            async for key in client.scan_iter(match=redis_prefix + "*"):
                dumped.append(key)
                kind = (await client.type(key)).decode()
                if kind == "hash":
                    for k, v in (await client.hgetall(key)).items():
                        dumped += [k, v]
                elif kind == "set":
                    dumped += list(await client.smembers(key))
                else:
                    dumped.append(await client.dump(key) or b"")
        finally:
            await client.aclose()
        assert len(dumped) > 20
        assert [d for d in dumped if MARK.encode() in d] == []

        conn = await asyncpg.connect(shadow_db)
        try:
            rows = [r[0] for r in await conn.fetch("SELECT t::text FROM shadow_diffs t")]
        finally:
            await conn.close()
        assert len(rows) >= 2  # both routes stored differing samples
        assert [r for r in rows if MARK in r] == []
        assert any("$.name" in r for r in rows) and any("[REDACTED]" in r for r in rows)
    finally:
        await store.aclose()
