"""The aiohttp and ASGI dry-run middlewares, on real loopback servers (aiohttp's and uvicorn's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
import pytest
import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support.waiting import eventually

from proxy.dryrun import HEADER, MemoryNonceStore, Verifier, sign
from proxy.dryrun.asgi import DryRunMiddleware, is_dry_run
from proxy.dryrun.web import DRY_RUN, dry_run_middleware

SECRET = b"test-secret"
BODY = b'{"item": "book", "qty": 2}'

Answer = tuple[int, Mapping[str, str], bytes]
Post = Callable[..., Awaitable[Answer]]


@contextlib.asynccontextmanager
async def aiohttp_app(verifier: Verifier) -> AsyncIterator[str]:
    async def orders(request: web.Request) -> web.Response:
        # The body stays readable after the middleware read it.
        body = await request.read()
        return web.json_response({"dry": request.get(DRY_RUN, False), "body": body.decode()})

    app = web.Application(middlewares=[dry_run_middleware(verifier)])
    app.router.add_post("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the port 0 chose
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def starlette_app(verifier: Verifier, max_body: int = 10 << 20) -> AsyncIterator[str]:
    async def orders(request: Request) -> JSONResponse:
        return JSONResponse({"dry": is_dry_run(request.scope), "body": (await request.body()).decode()})

    app = Starlette(
        routes=[Route("/orders", orders, methods=["POST"])],
        middleware=[Middleware(DryRunMiddleware, verifier=verifier, max_body=max_body)],
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="uvicorn to listen")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["aiohttp", "asgi"])
async def post(request: pytest.FixtureRequest) -> AsyncIterator[Post]:
    """POST to /orders on a service behind one of the two middlewares (secret SECRET, nonces in memory)."""
    factory = aiohttp_app if request.param == "aiohttp" else starlette_app
    async with aiohttp.ClientSession() as session, factory(Verifier(SECRET, MemoryNonceStore())) as base:

        async def send(path: str, body: bytes, headers: dict[str, str]) -> Answer:
            async with session.post(base + path, data=body, headers=headers) as resp:
                return resp.status, resp.headers, await resp.read()

        yield send


async def test_a_signed_write_runs_as_a_dry_run(post: Post) -> None:
    """A correct signature: the handler sees the flag and the same body; the answer says 'applied'."""
    status, headers, body = await post("/orders", BODY, {HEADER: sign(SECRET, "POST", "/orders", BODY)})
    assert status == 200
    assert headers[HEADER] == "applied"
    assert json.loads(body) == {"dry": True, "body": BODY.decode()}


async def test_a_request_without_the_header_is_untouched(post: Post) -> None:
    """No header: an ordinary request, no flag, no 'applied' header."""
    status, headers, body = await post("/orders", BODY, {})
    assert status == 200
    assert HEADER not in headers
    assert json.loads(body)["dry"] is False


async def test_a_replayed_signature_is_refused(post: Post) -> None:
    """The second use of one signature is answered 403 with a JSON error."""
    header = {HEADER: sign(SECRET, "POST", "/orders", BODY)}
    assert (await post("/orders", BODY, header))[0] == 200
    status, headers, body = await post("/orders", BODY, header)
    assert status == 403
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "BAD_DRY_RUN"


@pytest.mark.parametrize(
    "header",
    [
        sign(SECRET, "POST", "/orders", b'{"item": "car"}'),  # another body
        sign(SECRET, "POST", "/orders?x=1", BODY),  # another target
        sign(b"other-secret", "POST", "/orders", BODY),  # another secret
        sign(SECRET, "POST", "/orders", BODY, now=1.0),  # stale
        "t=1,n=zz,sig=00",  # malformed
    ],
)
async def test_a_wrong_signature_is_refused_before_the_handler(post: Post, header: str) -> None:
    """A signature of another request, secret or time is answered 403 and the handler does not run."""
    status, headers, body = await post("/orders", BODY, {HEADER: header})
    assert status == 403
    assert json.loads(body)["error"]["code"] == "BAD_DRY_RUN"
    assert HEADER not in headers


async def test_without_a_secret_every_dry_run_is_refused() -> None:
    """A verifier without a secret accepts nothing: a service never runs an unsigned write as a dry run."""
    verifier = Verifier(None, MemoryNonceStore())
    assert not await verifier.check(sign(SECRET, "POST", "/o", b""), "POST", "/o", b"")


def test_the_library_imports_nothing_of_the_gateway() -> None:
    """A service imports proxy.dryrun (and its ASGI middleware) without the gateway's modules or aiohttp."""
    probe = "import sys, proxy.dryrun, proxy.dryrun.asgi; print(' '.join(sorted(sys.modules)))"
    argv = [sys.executable, "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    loaded = done.stdout.split()
    # proxy.compiled: importing the package decides which build of the data path runs (stdlib only).
    gateway = [m for m in loaded if m.startswith("proxy.") and not m.startswith("proxy.dryrun")]
    assert gateway == ["proxy.compiled"]
    assert not {"aiohttp", "yaml", "uvloop", "httptools", "redis", "asyncpg"} & set(loaded)


async def test_asgi_refuses_a_dry_run_body_past_max_body() -> None:
    """The ASGI middleware reads a dry run's body whole, so it bounds it: past max_body, 413 JSON."""
    big = b"x" * 2048
    async with (
        aiohttp.ClientSession() as session,
        starlette_app(Verifier(SECRET, MemoryNonceStore()), 1024) as base,
    ):
        headers = {HEADER: sign(SECRET, "POST", "/orders", big)}
        async with session.post(base + "/orders", data=big, headers=headers) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "DRY_RUN_BODY_TOO_LARGE"
        headers = {HEADER: sign(SECRET, "POST", "/orders", BODY)}
        async with session.post(base + "/orders", data=BODY, headers=headers) as resp:
            assert resp.status == 200  # under the bound: as usual
