"""Canary routing of `target: auto` routes through the real data path (proxy/server/canary.py): the stage
splits requests between two loopback upstreams, sticky per client key, chosen per request."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from support.gwkit import GatewayFactory, RunningGateway, routes_yaml
from support.upstreams import EchoUpstream, RawClient

from proxy.server.gateway import AccessRecord, GatewaySettings

ROUTE = 'routes:\n  - name: users\n    match: {path: "/users/{id}"}\n    target: auto\n    rollout: %s\n'
PLAIN = "  - {name: posts, match: {path: /posts}, target: legacy}\n"
SERVED_BY = "X-Strangler-Served-By"


class Recorder:
    """Observer and access log at once: what the gateway reported as the serving side."""

    def __init__(self) -> None:
        self.observed: list[tuple[str, str]] = []
        self.logged: list[tuple[str, str]] = []

    def observe(self, route: str, target: str, status: int, seconds: float) -> None:
        self.observed.append((route, target))

    def __call__(self, record: AccessRecord) -> None:
        self.logged.append((record.route, record.target))


@pytest.fixture
async def sides() -> AsyncIterator[tuple[EchoUpstream, EchoUpstream]]:
    """Two echo upstreams: legacy and new, told apart by who saw the request."""
    legacy, new = await EchoUpstream().start(), await EchoUpstream().start()
    yield legacy, new
    await legacy.close()
    await new.close()


async def start(
    make_gateway: GatewayFactory,
    sides: tuple[EchoUpstream, EchoUpstream],
    rollout: str = '{sticky: "header:X-User"}',
    extra: str = "",
    settings: GatewaySettings | None = None,
    recorder: Recorder | None = None,
) -> RunningGateway:
    legacy, new = sides
    text = routes_yaml(legacy.port, new.port, routes=ROUTE % rollout + extra)
    return await make_gateway(text, settings, observer=recorder, access_log=recorder)


async def side_of(client: RawClient, headers: dict[str, str], path: str = "/users/1") -> str:
    """Which side served one request, as the response says (checked to be legacy or new)."""
    response = await client.request("GET", path, headers)
    assert response.status == 200
    side = response.header(SERVED_BY)
    assert side in ("legacy", "new"), response.headers
    return side


async def test_stage_0_all_legacy(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """An auto route absent from the stages is at stage 0: every request goes to legacy, reported so."""
    recorder = Recorder()
    handle = await start(make_gateway, sides, recorder=recorder)
    client = await RawClient.open(handle.port)
    try:
        seen = [await side_of(client, {"X-User": f"u{i}"}) for i in range(30)]
    finally:
        client.close()
    assert set(seen) == {"legacy"}
    assert len(sides[0].seen.requests) == 30 and sides[1].seen.requests == []
    assert set(recorder.observed) == {("users", "legacy")} and set(recorder.logged) == {("users", "legacy")}


async def test_stage_10000_all_new(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """At 10000 basis points every request goes to new, with new's request line; metrics say new."""
    recorder = Recorder()
    handle = await start(make_gateway, sides, recorder=recorder)
    handle.gateway.set_stages({"users": 10000})
    client = await RawClient.open(handle.port)
    try:
        seen = [await side_of(client, {"X-User": f"u{i}"}, f"/users/{i}?q=1") for i in range(30)]
    finally:
        client.close()
    assert set(seen) == {"new"}
    assert sides[0].seen.requests == [] and len(sides[1].seen.requests) == 30
    assert sides[1].seen.requests[7]["path"] == "/users/7?q=1"
    assert set(recorder.observed) == {("users", "new")} and set(recorder.logged) == {("users", "new")}


async def test_half_stage_splits_keys_and_each_key_sticks(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """At 5000, 200 distinct keys split near half (loosely: 30%..70%), and each key always gets one side."""
    handle = await start(make_gateway, sides)
    handle.gateway.set_stages({"users": 5000})
    client = await RawClient.open(handle.port)
    try:
        first = {i: await side_of(client, {"X-User": f"user-{i}"}) for i in range(200)}
        for _ in range(2):
            again = {i: await side_of(client, {"X-User": f"user-{i}"}, f"/users/{i}") for i in range(200)}
            assert again == first
    finally:
        client.close()
    share = sum(side == "new" for side in first.values()) / 200
    assert 0.3 <= share <= 0.7, share
    assert len(sides[1].seen.requests) == 3 * sum(side == "new" for side in first.values())


async def test_raising_the_stage_never_moves_a_client_back_to_legacy(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """Each stage raise only adds clients to new: who was on new stays; at the end all are."""
    handle = await start(make_gateway, sides)
    client = await RawClient.open(handle.port)
    on_new: set[int] = set()
    try:
        for stage in (0, 100, 1000, 2500, 5000, 9000, 10000):
            handle.gateway.set_stages({"users": stage})
            now = {i for i in range(100) if await side_of(client, {"X-User": f"c{i}"}) == "new"}
            assert on_new <= now, (stage, on_new - now)
            on_new = now
    finally:
        client.close()
    assert on_new == set(range(100))


async def test_route_cache_holds_both_sides_not_a_choice(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """The same cached request follows the stage as it changes, written wholesale or in place."""
    handle = await start(make_gateway, sides)
    gateway = handle.gateway
    client = await RawClient.open(handle.port)
    try:
        assert await side_of(client, {"X-User": "same"}) == "legacy"
        gateway.set_stages({"users": 10000})
        assert await side_of(client, {"X-User": "same"}) == "new"
        gateway.stages["users"] = 0  # the sync task may also write the mapping in place
        assert await side_of(client, {"X-User": "same"}) == "legacy"
        gateway.stages.clear()
        gateway.stages.update({"users": 10000})
        assert await side_of(client, {"X-User": "same"}) == "new"
        gateway.set_stages({})
        assert await side_of(client, {"X-User": "same"}) == "legacy"
    finally:
        client.close()


async def test_testers_header_reaches_new_from_the_first_canary_stage(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """A tester's request goes to new once the stage is above 0 (not at 0: shadowing only); others do not."""
    rollout = '{sticky: "header:X-User", testers: {header: X-Tester, value: "on"}}'
    handle = await start(make_gateway, sides, rollout)
    client = await RawClient.open(handle.port)
    try:
        assert await side_of(client, {"X-Tester": "on", "X-User": "t"}) == "legacy"  # stage 0
        handle.gateway.set_stages({"users": 1})  # 0.01%: almost nobody by bucket
        users = [f"u{i}" for i in range(50)]
        assert [await side_of(client, {"x-tester": "on", "X-User": u}) for u in users] == ["new"] * 50
        by_bucket = [await side_of(client, {"X-Tester": "off", "X-User": u}) for u in users]
        assert by_bucket.count("new") <= 2  # bucket < 1 for at most a stray key or two
    finally:
        client.close()


def bearer(claims: object) -> str:
    """An unsigned-looking JWT carrying ``claims`` (the gateway never verifies it)."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"Bearer {part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


async def test_jwt_sub_key_sticks_by_subject_and_a_bad_token_uses_the_ip(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """With `sticky: jwt_sub` two tokens of one subject land on one side; a malformed token, like none, is
    keyed by the client address from the trusted hop (X-Forwarded-For with trusted_hops 1)."""
    handle = await start(make_gateway, sides, "{sticky: jwt_sub}", settings=GatewaySettings(trusted_hops=1))
    handle.gateway.set_stages({"users": 5000})
    client = await RawClient.open(handle.port)
    try:
        for i in range(40):
            one = await side_of(client, {"Authorization": bearer({"sub": f"s{i}", "iat": 1})})
            two = await side_of(client, {"Authorization": bearer({"sub": f"s{i}", "iat": 2, "x": [1]})})
            assert one == two
        for i in range(40):
            ip = {"X-Forwarded-For": f"10.0.0.{i}"}
            plain = await side_of(client, ip)
            for bad in ("Bearer x.y", "Bearer a.!!!.c", bearer([1, 2]), bearer({"sub": ""}), "Basic dTpw"):
                assert await side_of(client, {**ip, "Authorization": bad}) == plain
        subs = {await side_of(client, {"Authorization": bearer({"sub": f"s{i}"})}) for i in range(40)}
        assert subs == {"legacy", "new"}  # subjects, not the one client address, pick the side
    finally:
        client.close()


async def test_cookie_key_sticks(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """With `sticky: cookie:sid` the cookie's value picks the side, wherever it sits in the Cookie header."""
    handle = await start(make_gateway, sides, '{sticky: "cookie:sid"}')
    handle.gateway.set_stages({"users": 5000})
    client = await RawClient.open(handle.port)
    try:
        seen = set()
        for i in range(40):
            alone = await side_of(client, {"Cookie": f"sid=v{i}"})
            among = await side_of(client, {"Cookie": f"theme=dark; sid=v{i}; lang=fr"})
            assert alone == among
            seen.add(alone)
        assert seen == {"legacy", "new"}
    finally:
        client.close()


async def test_other_routes_are_untouched(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """A route with a hand-set target ignores the stages and carries no Served-By header."""
    recorder = Recorder()
    handle = await start(make_gateway, sides, extra=PLAIN, recorder=recorder)
    handle.gateway.set_stages({"users": 10000, "posts": 10000})
    client = await RawClient.open(handle.port)
    try:
        response = await client.request("GET", "/posts")
    finally:
        client.close()
    assert response.status == 200 and response.header(SERVED_BY) is None
    assert len(sides[0].seen.requests) == 1 and recorder.observed == [("posts", "legacy")]


async def test_set_stages_refuses_out_of_range_and_keeps_the_old(
    make_gateway: GatewayFactory, sides: tuple[EchoUpstream, EchoUpstream]
) -> None:
    """set_stages takes ints 0..10000 only; a bad mapping raises and leaves the stages as they were."""
    handle = await start(make_gateway, sides)
    gateway = handle.gateway
    gateway.set_stages({"users": 2500})
    for bad in (10001, -1, True, 50.0):
        with pytest.raises(ValueError, match="users"):
            gateway.set_stages({"other": 0, "users": bad})
    assert gateway.stages == {"users": 2500}
    assert gateway.stage_of("users") == 2500 and gateway.stage_of("absent") == 0
