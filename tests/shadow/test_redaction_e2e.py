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
            rows = [r[0] for r in await conn.fetch("SELECT t::text FROM strangler.shadow_diffs t")]
        finally:
            await conn.close()
        assert len(rows) >= 2  # both routes stored differing samples
        assert [r for r in rows if MARK in r] == []
        assert any("$.name" in r for r in rows) and any("[REDACTED]" in r for r in rows)
    finally:
        await store.aclose()


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.ZmFrZS1zaWduYXR1cmUtZm9yLXRlc3Rz"


def leaky(side: str) -> object:
    """A backend answering with the values the abuse test found stored: each must stay out of storage."""

    async def handle(request: web.Request) -> web.StreamResponse:
        doc = {
            "name": f"n-{side}",
            "passwd": f"pw-{side}-0001",
            "session_id": f"sess-{side}-0001",
            "auth": {"bearer": f"bear-{side}-0001"},
            "data": JWT,
            "owner": f"alice.{side}@example.com",
            "index": {"Zt4xQm8Lp2Vr6Ns0Kc9Wb3Hd": 1},
        }
        response = web.Response(body=orjson.dumps(doc), content_type="application/json")
        response.headers["X-Session"] = f"xs-{side}-0001"
        return response

    return handle


async def test_values_found_by_abuse_testing_are_not_stored(
    make_rig: RigFactory, backends: tuple[Backend, Backend], redis_url: str, redis_prefix: str, shadow_db: str
) -> None:
    """passwd, session_id, auth.bearer, a JWT under an ordinary key, a compared X-Session header, a secret
    used as a JSON key and e-mail addresses: none reaches PostgreSQL or Redis, while the stored sample still
    shows that the e-mail differed (two different tags)."""
    legacy, new = backends
    legacy.handler, new.handler = leaky("legacy"), leaky("new")  # type: ignore[assignment]
    routes = ("  - {name: leak, match: {methods: [GET], path: /leak}, target: legacy, shadow: {sample: 1.0},"
              " compare: {headers: [content-type, x-session]}}\n")  # fmt: skip
    planted = [f"{kind}-{side}-0001" for kind in ("pw", "sess", "bear", "xs") for side in ("legacy", "new")]
    planted += [JWT, "alice.legacy@example.com", "alice.new@example.com", "Zt4xQm8Lp2Vr6Ns0Kc9Wb3Hd"]
    store = await RedisPgStore.connect(redis_url, shadow_db, redis_prefix)
    try:
        rig = await make_rig(routes_text(legacy, new, routes, "aa_sample: 0"), store=store)
        assert (await rig.get("/leak"))[0] == 200
        await rig.shadower.drain()
        conn = await asyncpg.connect(shadow_db)
        try:
            rows = [r[0] for r in await conn.fetch("SELECT t::text FROM strangler.shadow_diffs t")]
            diffs = [orjson.loads(r[0]) for r in await conn.fetch("SELECT diff FROM strangler.shadow_diffs")]
        finally:
            await conn.close()
        assert rows, "the differing sample was stored"
        assert [p for p in planted if any(p in r for r in rows)] == []
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
            blobs = keys + [b for k in keys if (await client.type(k)) == b"hash"
                            for kv in (await client.hgetall(k)).items() for b in kv]  # fmt: skip
        finally:
            await client.aclose()
        assert [p for p in planted if any(p.encode() in b for b in blobs)] == []
        (owner,) = [d for diff in diffs for d in diff if d["path"] == "$.owner"]
        assert owner["control"] != owner["candidate"]
        assert all(owner[side].startswith("[REDACTED email ") for side in ("control", "candidate"))
    finally:
        await store.aclose()
