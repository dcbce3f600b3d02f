"""The post event stream and the WebSocket through a real gateway process, and a flip while connected.

The stream route flips like any other: a client connected before the flip keeps its stream on the old
side until it reconnects; it then reconnects with ``Last-Event-ID`` and lands on the other side without
losing an event. Which side serves a stream is read from each service's ``/health/streams`` gauges.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from contract_kit import Account, Api  # importable: tests/e2e/conftest.py loads e2e_rig, which sets the path
from contract_stack import Stack
from stream_kit import SseClient, StreamStack, wait_gauges
from support.opshelp import start_gateway
from support.waiting import eventually

SIDES = ("legacy", "new")
STREAM_WHY = "stream: responses are event streams / WebSockets, not compared"


def routes_text(ports: dict[str, int], stream_target: str, timeout: float = 10.0) -> str:
    """Everything to legacy but the stream, which goes to `stream_target`."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "http://127.0.0.1:{ports["legacy"]}", connect_timeout: 2.0, timeout: {timeout}}}\n'
        f'  new: {{url: "http://127.0.0.1:{ports["new"]}", connect_timeout: 2.0, timeout: {timeout}}}\n'
        "default: legacy\n"
        "routes:\n"
        "  - name: posts-stream\n"
        '    match: {methods: [GET], path: "/api/v1/posts/stream"}\n'
        f"    target: {stream_target}\n"
    )


@pytest.fixture(scope="module")
def stream_services(make_database: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[Stack]:
    """legacy and new on one database and Redis prefix, heartbeats (1 s) well below the gateway's 10 s
    body idle timeout, which would otherwise cut a quiet stream."""
    log_dir = tmp_path_factory.mktemp("e2e-stream")
    stack = StreamStack(database_url=make_database(), redis_url=redis_url, log_dir=log_dir)
    try:
        for name in SIDES:
            stack.start(name)
        yield stack
    finally:
        problems = stack.close()
        assert not problems, problems


@pytest_asyncio.fixture(loop_scope="function")
async def flip_rig(stream_services: Stack, tmp_path: Path) -> AsyncIterator[tuple[Any, Path, dict[str, int]]]:
    """A gateway whose stream route starts on legacy; the routes file path, to flip it."""
    ports = {name: stream_services.running[name].port for name in SIDES}
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text(ports, "legacy"))
    gateway = await start_gateway(routes, "--access-log", "false", "--reload-interval", "600")
    try:
        yield gateway, routes, ports
    finally:
        assert await gateway.stop() == 0, "\n".join(gateway.raw[-40:])


def _create(api: Api, user: Account, title: str) -> bytes:
    r = api.post("/api/v1/posts", json_body={"title": title, "body": "b"}, token=user.access_token)
    assert r.status_code == 201, r.text
    return r.content


async def _until(client: SseClient, body: bytes) -> str:
    """Read events until the one carrying `body`; return its id."""
    while (event := await client.next_event()).data != body:
        pass
    assert event.id is not None
    return event.id


async def test_flip_keeps_connected_streams_and_reconnects_land_on_the_other_side(
    stream_services: Stack, flip_rig: tuple[Any, Path, dict[str, int]]
) -> None:
    """Connected before the flip: keeps legacy's stream; reconnecting with Last-Event-ID: new's, no loss."""
    gateway, routes, _ = flip_rig
    legacy, new = (stream_services.api(n) for n in SIDES)
    port = int(gateway.listen.rsplit(":", 1)[1])
    urls = {n: stream_services.running[n].base_url for n in SIDES}
    try:
        user = await asyncio.to_thread(legacy.register, name="Flipper")
        client = await SseClient.open(port)
        try:
            assert client.status == 200
            await wait_gauges(urls["legacy"], lambda g: g["sse_open"] == 1)
            bodies = [await asyncio.to_thread(_create, legacy, user, "one")]
            ids = [await _until(client, bodies[0])]

            routes.write_text(routes_text(flip_rig[2], "new"))
            mark = len(gateway.lines)
            gateway.signal(signal.SIGHUP)
            await gateway.wait_for("routes reloaded", after=mark)

            bodies.append(await asyncio.to_thread(_create, new, user, "two"))
            ids.append(await _until(client, bodies[1]))  # still legacy's stream, fed by new's post
            assert (await wait_gauges(urls["new"], lambda g: True))["sse_open"] == 0
        finally:
            await client.close()
        bodies.append(await asyncio.to_thread(_create, legacy, user, "three (while away)"))
        client = await SseClient.open(port, last_event_id=ids[-1])
        try:
            await wait_gauges(urls["new"], lambda g: g["sse_open"] == 1)
            await wait_gauges(urls["legacy"], lambda g: g["sse_open"] == 0)
            replayed = await client.next_event()
            assert replayed.data == bodies[2]
            assert replayed.id is not None
            ids.append(replayed.id)
            bodies.append(await asyncio.to_thread(_create, legacy, user, "four"))
            live = await client.next_event()
            assert live.data == bodies[3]
            assert live.id is not None
            ids.append(live.id)
        finally:
            await client.close()
        keys = [tuple(map(int, i.split("-"))) for i in ids]
        assert keys == sorted(set(keys))  # in order, none twice
    finally:
        legacy.close()
        new.close()


@pytest.mark.parametrize("target", SIDES)
async def test_socket_through_the_gateway(stream_services: Stack, flip_rig: tuple[Any, Path, dict[str, int]],
                                          target: str) -> None:
    """A WebSocket tunnelled by the gateway (the default route, legacy, or the flipped one) gets posts."""
    gateway, routes, ports = flip_rig
    if target == "new":
        routes.write_text(routes_text(ports, "new").replace("/api/v1/posts/stream", "/api/v1/ws"))
        mark = len(gateway.lines)
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for("routes reloaded", after=mark)
    api = stream_services.api("legacy")
    try:
        user = await asyncio.to_thread(api.register, name="Socket")
        async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{gateway.url}/api/v1/ws", headers=user.auth
        ) as ws:
            await wait_gauges(stream_services.running[target].base_url, lambda g: g["ws_open"] == 1)
            body = await asyncio.to_thread(_create, api, user, "via gateway")
            async with asyncio.timeout(10.0):
                while True:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    if msg.data.endswith(',"post":' + body.decode() + "}"):
                        break
    finally:
        api.close()


@pytest.mark.parametrize("target", SIDES)
async def test_heartbeats_keep_a_quiet_stream_open_past_the_gateway_idle_timeout(
    stream_services: Stack, tmp_path: Path, target: str
) -> None:
    """With a 2 s body idle timeout at the gateway, 1 s heartbeats keep a stream with no events alive."""
    ports = {name: stream_services.running[name].port for name in SIDES}
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text(ports, target, timeout=2.0))
    gateway = await start_gateway(routes, "--access-log", "false", "--reload-interval", "600")
    try:
        client = await SseClient.open(int(gateway.listen.rsplit(":", 1)[1]))
        try:
            assert client.status == 200
            beats = 0
            while beats < 5:  # five heartbeats: well past two idle timeouts, the stream still open
                beats += (await client.next(deadline=10.0)).raw == b": heartbeat"
        finally:
            await client.close()
    finally:
        assert await gateway.stop() == 0, "\n".join(gateway.raw[-40:])


async def test_shadowed_stream_and_socket_are_never_copied(
    stream_services: Stack, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Stream and socket routes shadowed at sample 1.0 against the real services: new never gets a shadow
    stream or socket, the clients get their posts, and /report.json says COMPARISON UNAVAILABLE (stream)."""
    ports = {name: stream_services.running[name].port for name in SIDES}
    urls = {n: stream_services.running[n].base_url for n in SIDES}
    shadowed = "    target: legacy\n    shadow: {sample: 1.0}\n"
    text = routes_text(ports, "legacy").replace("    target: legacy\n", shadowed) + (
        '  - name: ws\n    match: {methods: [GET], path: "/api/v1/ws"}\n' + shadowed
        + '  - name: posts-list\n    match: {methods: [GET], path: "/api/v1/posts"}\n' + shadowed
    )  # fmt: skip
    routes = tmp_path / "routes.yaml"
    routes.write_text(text)
    env = {"REDIS_URL": redis_url, "STRANGLER_SHADOW_PREFIX": redis_prefix}
    gateway = await start_gateway(routes, "--access-log", "false", "--reload-interval", "600", env=env)
    api = stream_services.api("legacy")

    async def report() -> dict[str, dict[str, Any]]:
        url = f"http://{gateway.admin}/report.json"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            assert r.status == 200, await r.text()
            return {route["name"]: route for route in (await r.json())["routes"]}

    async def counted(route: str, key: str) -> dict[str, dict[str, Any]] | None:
        routes = await report()
        return routes if routes[route]["counters"].get(key, 0) >= 1 else None

    try:
        port = int(gateway.listen.rsplit(":", 1)[1])
        user = await asyncio.to_thread(api.register, name="Shadowed")
        client = await SseClient.open(port)
        try:
            assert client.status == 200
            async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{gateway.url}/api/v1/ws", headers=user.auth
            ) as ws:
                await wait_gauges(urls["legacy"], lambda g: g["sse_open"] == 1 and g["ws_open"] == 1)
                body = await asyncio.to_thread(_create, api, user, "watched")
                await _until(client, body)
                async with asyncio.timeout(10.0):
                    while not (await ws.receive_str()).endswith(',"post":' + body.decode() + "}"):
                        pass
                await eventually(lambda: counted("posts-stream", "unavailable_stream"), what="stream counted")
                got = await eventually(lambda: counted("ws", "unavailable_websocket"), what="socket counted")
                for name in ("posts-stream", "ws"):
                    assert got[name]["verdict"] == "COMPARISON UNAVAILABLE", got[name]
                    assert got[name]["reasons"] == [STREAM_WHY]
                gauges = await wait_gauges(urls["new"], lambda g: True)
                assert (gauges["sse_open"], gauges["ws_open"]) == (0, 0)  # no shadow stream or socket
        finally:
            await client.close()
        await wait_gauges(urls["legacy"], lambda g: g["sse_open"] == 0 and g["ws_open"] == 0)
        # A later comparison on another route: the stream's and socket's ends were recorded before it.
        async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/api/v1/posts") as r:
            assert r.status == 200
        got = await eventually(lambda: counted("posts-list", "compared"), what="a later comparison")
        assert got["posts-stream"]["counters"].get("sampled", 0) == 0
        assert got["ws"]["counters"].get("sampled", 0) == 0
        gauges = await wait_gauges(urls["new"], lambda g: True)
        assert (gauges["sse_open"], gauges["ws_open"]) == (0, 0)
    finally:
        api.close()
        assert await gateway.stop() == 0, "\n".join(gateway.raw[-40:])
