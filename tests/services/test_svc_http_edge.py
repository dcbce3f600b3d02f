"""The pure parts of compression and conditional GETs, and the edge middleware around streamed answers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.compression import negotiate
from services.conditional import etag, http_date, is_fresh
from services.edge import cors_on_prepare, outer_middleware
from services.settings import CorsSettings, Settings

TAG = '"5-qvTGHdzF6KLavt4PO0gs2a6pQ00"'


@pytest.mark.parametrize(("accept", "coding"), [
    (None, "identity"), ("", "identity"), ("gzip", "gzip"), ("gzip, deflate, br", "br"),
    ("br;q=0.5, gzip", "gzip"), ("*", "br"), ("*;q=0", None), ("identity;q=0", None),
    ("gzip;q=0", "identity"),
    ("deflate;q=abc, gzip;q=0.1", "gzip"), ("x-unknown", "identity"), ("GZIP", "gzip"),
])  # fmt: skip
def test_negotiate_follows_negotiator(accept: str | None, coding: str | None) -> None:
    """The coding is negotiator 0.6's pick (q first, then br/gzip preferred); None when nothing fits."""
    assert negotiate(accept) == coding


def headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def test_etag_and_http_date() -> None:
    """The etag package's strong form; updated_at as an HTTP date in whole seconds."""
    assert etag(b"hello") == TAG
    assert http_date("2026-11-01T06:04:00.999Z") == "Sun, 01 Nov 2026 06:04:00 GMT"


@pytest.mark.parametrize(("request_headers", "fresh"), [
    ({}, False),
    ({"If_None_Match": TAG}, True),
    ({"If_None_Match": f"W/{TAG}"}, True),
    ({"If_None_Match": f'"a",  {TAG} '}, True),
    ({"If_None_Match": '"a"'}, False),
    ({"If_None_Match": "*"}, True),
    ({"If_None_Match": TAG, "Cache_Control": "max-age=0, no-cache"}, False),
    ({"If_None_Match": '"a"', "If_Modified_Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, False),
    ({"If_Modified_Since": "Sun, 01 Nov 2026 06:04:00 GMT"}, True),
    ({"If_Modified_Since": "Sun, 01 Nov 2026 06:03:59 GMT"}, False),
    ({"If_Modified_Since": "garbage"}, False),
    ({"If_Modified_Since": "2026-11-01T06:04:00Z"}, True),
    ({"If_Modified_Since": "2026-11-01"}, False),
])  # fmt: skip
def test_is_fresh_follows_the_fresh_package(request_headers: dict[str, str], fresh: bool) -> None:
    """If-None-Match decides when present (weak and listed tags match); else If-Modified-Since."""
    assert is_fresh(headers(**request_headers), TAG, "Sun, 01 Nov 2026 06:04:00 GMT") is fresh


async def test_streamed_answers_pass_untouched(aiohttp_client: Any) -> None:
    """A streamed response is neither turned into a 304 nor compressed, and still gets CORS headers."""

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + b"x" * 4000 + b"\n\n")
        return response

    settings = Settings(database_url="postgresql://x", redis_url="redis://x", jwt_secret="s" * 32,
                        cors=CorsSettings(origins=("https://app.example.com",)))  # fmt: skip
    app = web.Application(middlewares=[outer_middleware(settings)])
    app.on_response_prepare.append(cors_on_prepare(settings))
    app.router.add_get("/events", events)
    client = await aiohttp_client(app)
    r = await client.get("/events", headers={"If-None-Match": "*", "Accept-Encoding": "gzip",
                                             "Origin": "https://app.example.com"})  # fmt: skip
    assert r.status == 200 and "Content-Encoding" not in r.headers
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Vary"] == "Origin"
    assert (await r.read()).startswith(b"data: xxx")
