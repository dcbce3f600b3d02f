"""Judging differences against real loopback upstreams: race-aware re-reads of reads, generated values
compared by shape, and noise that A/A pairs must explain (proxy.shadow.judge, noise, shapes)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from proxy.report.model import build_report
from proxy.shadow.noise import MIN_GENERATED, NOISE_REFRESH_S

from .shadow_rig import Backend, Rig, RigFactory, routes_text

ITEM = "  - {name: item, match: {methods: [GET], path: /item}, target: %s, shadow: {sample: 1.0}}\n"
CREATE = (
    "  - {name: create, match: {methods: [POST], path: /things}, target: legacy,"
    " shadow: {sample: 1.0, writes: true}%s}\n"
)


async def test_data_changed_during_the_comparison_is_raced_not_differed(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Another client changes the item right after each primary read: the candidate sees the new value,
    the re-read of legacy (same headers) sees it too, so the difference is a race, not new's fault."""
    legacy, new = backends
    state = {"n": 0}

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        answer = web.json_response({"id": 1, "name": f"v{state['n']}"})
        state["n"] += 1  # a concurrent write lands after each legacy read
        return answer

    async def new_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 1, "name": f"v{state['n']}"})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 0"))
    for _ in range(5):
        status, _, _ = await rig.get("/item", headers={"X-Trace": "t-1", "Authorization": "Bearer abc"})
        assert status == 200
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    get = st.methods["GET"]
    assert (st.get("raced"), get.get("raced"), st.get("compared"), st.get("differed")) == (5, 5, 0, 0)
    assert len(legacy.seen) == 10  # each primary and its re-read
    reread = legacy.seen[1]
    assert reread["method"] == "GET" and reread["path"] == "/item"
    assert (reread["headers"]["X-Trace"], reread["headers"]["Authorization"]) == ("t-1", "Bearer abc")
    (report,) = [r for r in build_report(await rig.store.stats(), rig.table).routes if r.name == "item"]
    assert report.raced == 5 and report.compared == 0 and report.paths == []


async def test_a_candidate_that_really_differs_is_differed_after_the_reread(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Legacy stable and new different: the re-read shows no change, so it is a difference. When legacy
    changes elsewhere but new differs at a path the re-read did not move, it is a difference too."""
    legacy, new = backends
    state = {"n": 0}

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        state["n"] += 1
        return web.json_response({"name": "Alice", "views": state["n"] if request.query.get("race") else 0})

    async def new_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": "Bob", "views": state["n"] + 1 if request.query.get("race") else 0})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 0"))
    for path in ("/item", "/item", "/item?race=1"):
        await rig.get(path)
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("differed"), st.get("compared"), st.get("raced")) == (3, 3, 0)
    assert len(legacy.seen) == 6  # every difference was re-read first
    assert st.signatures == {"$.name": 2, "$.name $.views": 1}


async def test_rereads_are_rate_limited_then_count_as_today(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """With a budget of 2 re-reads a second and the clock held, 2 races are told; the rest count as
    differences, as without re-reads. The bucket refills with the clock."""
    legacy, new = backends
    state = {"n": 0}
    now = [1000.0]

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        answer = web.json_response({"name": f"v{state['n']}"})
        state["n"] += 1
        return answer

    async def new_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": f"v{state['n']}"})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 0"), reread_rate=2.0,
                         clock=lambda: now[0])  # fmt: skip
    for _ in range(5):
        await rig.get("/item")
        await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("raced"), st.get("differed")) == (2, 3) and len(legacy.seen) == 5 + 2
    now[0] += 0.5  # one token back
    await rig.get("/item")
    await rig.shadower.drain()
    assert (await rig.store.stats())["item"].get("raced") == 3


async def test_after_a_flip_the_reread_goes_to_new(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Served by new, the primary is new: a race is told by re-reading new, not legacy."""
    legacy, new = backends
    state = {"n": 0}

    async def new_h(request: web.Request) -> web.StreamResponse:
        answer = web.json_response({"name": f"v{state['n']}"})
        state["n"] += 1
        return answer

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": f"v{state['n']}"})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "new", "aa_sample: 0"))
    for _ in range(3):
        await rig.get("/item")
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("raced"), st.get("differed")) == (3, 0)
    assert (len(new.seen), len(legacy.seen)) == (6, 3)


async def test_after_a_flip_the_aa_call_goes_to_new_and_a_clock_is_noise(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Served by new, the A/A call is a second call of new after its answer, not a second legacy call beside
    the first one: a per-process clock (new's moves on every call, legacy's stands still between two calls
    in the same instant) is learned as noise instead of counted against new."""
    legacy, new = backends
    ticks = {"n": 0}
    now = [1000.0]

    async def new_h(request: web.Request) -> web.StreamResponse:
        ticks["n"] += 1
        return web.json_response({"status": "ok", "uptime_s": 5.0 + ticks["n"] / 1000})

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "uptime_s": 7.25})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "new", "aa_sample: 1.0"), reread_rate=0.0,
                         aa_rate=1000.0, clock=lambda: now[0])  # fmt: skip
    for _ in range(MIN_GENERATED + 2):
        await rig.get("/item")
        await rig.shadower.drain()
    assert (len(new.seen), len(legacy.seen)) == (2 * (MIN_GENERATED + 2), MIN_GENERATED + 2)
    st = (await rig.store.stats())["item"]
    assert (st.get("aa_pairs"), st.get("differed")) == (MIN_GENERATED + 2, MIN_GENERATED + 2)
    now[0] += NOISE_REFRESH_S + 1
    await rig.get("/item")
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("noise"), st.get("differed")) == (1, MIN_GENERATED + 2)


async def test_writes_are_never_reread(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> None:
    """A differing write is not sent again to the primary (only GET and HEAD are re-read)."""
    legacy, new = backends

    async def answer(request: web.Request) -> web.StreamResponse:
        who = "legacy" if request.headers.get("X-Strangler-Dry-Run") is None else "new"
        return web.json_response({"who": who}, status=201)

    legacy.handler = new.handler = answer
    rig = await make_rig(routes_text(legacy, new, CREATE % "", "aa_sample: 0"))
    await rig.request("POST", "/things", data=b"{}", headers={"Content-Type": "application/json"})
    await rig.shadower.drain()
    st = (await rig.store.stats())["create"]
    assert (st.get("differed"), st.get("raced")) == (1, 0) and len(legacy.seen) == 1


def _jwt(payload: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2ln"


class Creator:
    """A create endpoint: a new id, a millisecond UTC timestamp and a JWT on every call; ``plant`` changes
    the candidate's shape of one field."""

    def __init__(self, base: int) -> None:
        self.n = base
        self.plant: str | None = None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.n += 1
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.n, milliseconds=self.n % 1000)
        doc: dict[str, Any] = {
            "id": self.n,
            "title": "hello",
            "created_at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "token": _jwt({"sub": str(self.n), "iat": 1700000000 + self.n, "exp": 1700000900 + self.n}),
        }
        if self.plant == "timestamp":
            doc["created_at"] = at.isoformat(timespec="seconds").replace("+00:00", "Z")
        elif self.plant == "id":
            doc["id"] = str(self.n)
        elif self.plant == "claims":
            doc["token"] = _jwt({"sub": str(self.n), "iat": 1, "exp": 2, "role": "admin"})
        elif self.plant == "title":
            doc["title"] = "hello!"
        return web.json_response(doc, status=201)


OK, WRONG = b'{"ok": true}', b'{"ok": false}'
Post = Callable[..., Awaitable[None]]


async def login_rig(make_rig: RigFactory, backends: tuple[Backend, Backend]) -> tuple[Rig, Post, list[float]]:
    """A route both sides answer as a login (a fresh token to OK, a 401 without one to WRONG), shadowed on
    a clock the test moves; ``post(*bodies)`` sends each and waits for its comparison."""
    legacy, new = backends

    async def login(request: web.Request) -> web.StreamResponse:
        if (await request.json()).get("ok") is False:
            return web.json_response({"error": "invalid credentials"}, status=401)
        return web.json_response({"token": uuid.uuid4().hex + uuid.uuid4().hex})

    legacy.handler = new.handler = login
    now = [1000.0]
    rig = await make_rig(routes_text(legacy, new, CREATE % "", "aa_sample: 0"), clock=lambda: now[0])

    async def post(*bodies: bytes) -> None:
        for body in bodies:
            await rig.request("POST", "/things", data=body)
            await rig.shadower.drain()

    return rig, post, now


async def test_a_write_holds_its_tokens_until_they_showed_in_enough_comparisons(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A login answers a fresh token, or a 401 without one (the same on both sides): its first tokens are
    held as learning until the token itself showed in MIN_GENERATED comparisons, however many 401s were
    compared beside them; then it is generated. None of it ever counts as a difference."""
    rig, post, now = await login_rig(make_rig, backends)
    mixed = [WRONG if i % 3 == 2 else OK for i in range(24)]
    await post(*mixed)  # 16 tokens and 8 401s: 24 comparisons, the token shown in 16
    now[0] += NOISE_REFRESH_S + 1
    await post(*mixed[:3])
    st = (await rig.store.stats())["create"]
    assert (st.get("learning"), st.get("matched"), st.get("differed")) == (18, 9, 0)
    await post(*mixed[:6])
    now[0] += NOISE_REFRESH_S + 1
    await post(*mixed[:3])
    st = (await rig.store.stats())["create"]
    assert (st.get("generated"), st.get("differed")) == (2, 0)


async def test_a_write_holds_its_first_tokens_after_many_401s(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A login whose first answers are all 401s (a client retrying a bad password, say): when its first
    tokens come, more than MIN_GENERATED comparisons are counted, none of them where a token could show:
    those tokens are held as learning, not differences (the rehearsal's login once went "not READY" so)."""
    rig, post, now = await login_rig(make_rig, backends)
    await post(*[WRONG] * (MIN_GENERATED + 5))
    now[0] += NOISE_REFRESH_S + 1
    await post(OK, OK, OK)
    st = (await rig.store.stats())["create"]
    assert (st.get("matched"), st.get("learning"), st.get("differed")) == (MIN_GENERATED + 5, 3, 0)


async def test_generated_values_learned_and_compared_by_shape(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """Creates answer a new id, timestamp and token every time: after MIN_GENERATED comparisons those are
    generated (matched, shown with their rate); until then such differences are held as learning. A
    planted shape change (id as a string, a timestamp without milliseconds, a JWT with another claim)
    and a changed plain field still differ."""
    legacy, new = backends
    legacy.handler, creator = Creator(0), Creator(5000)
    new.handler = creator
    now = [1000.0]
    rig = await make_rig(routes_text(legacy, new, CREATE % "", "aa_sample: 0"), clock=lambda: now[0])

    async def post() -> None:
        status, _, _ = await rig.request("POST", "/things", data=b"{}")
        assert status == 201
        await rig.shadower.drain()

    for _ in range(MIN_GENERATED + 5):
        await post()
    st = (await rig.store.stats())["create"]
    post_counts = st.methods["POST"].path_counts()
    assert (st.get("learning"), st.get("compared"), post_counts.compared) == (MIN_GENERATED + 5, 0, 25)
    now[0] += NOISE_REFRESH_S + 1  # the learned state is read again
    for _ in range(3):
        await post()
    st = (await rig.store.stats())["create"]
    assert (st.get("compared"), st.get("matched"), st.get("generated"), st.get("differed")) == (3, 3, 3, 0)
    (report,) = [r for r in build_report(await rig.store.stats(), rig.table).routes if r.name == "create"]
    assert [(g["method"], g["path"], g["rate"], g["learned"]) for g in report.generated] == [
        ("POST", "$.created_at", 1.0, True), ("POST", "$.id", 1.0, True), ("POST", "$.token", 1.0, True),
    ]  # fmt: skip
    assert report.match_rate == 1.0
    plants = (("timestamp", "$.created_at"), ("id", "$.id"), ("claims", "$.token"), ("title", "$.title"))
    for plant, path in plants:
        creator.plant = plant
        await post()
        st = (await rig.store.stats())["create"]
        assert st.signatures.get(path) == 1, (plant, st.signatures)
    assert st.get("differed") == 4


async def test_configured_generated_paths_need_no_learning(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """compare.generated paths are compared by shape from the first comparison; a shape change differs."""
    legacy, new = backends
    legacy.handler, creator = Creator(0), Creator(5000)
    new.handler = creator
    rules = ", compare: {generated: ['$.id', '$.created_at', '$.token']}"
    rig = await make_rig(routes_text(legacy, new, CREATE % rules, "aa_sample: 0"))
    for _ in range(3):
        await rig.request("POST", "/things", data=b"{}")
    creator.plant = "id"
    await rig.request("POST", "/things", data=b"{}")
    await rig.shadower.drain()
    st = (await rig.store.stats())["create"]
    assert (st.get("compared"), st.get("matched"), st.get("generated"), st.get("learning")) == (4, 3, 3, 0)
    assert st.signatures == {"$.id": 1}


async def test_a_dozen_aa_races_do_not_make_a_lists_fields_noise(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """The first 12 A/A calls see a changed list (a race during warm-up); new's titles really differ.
    The titles are not learned as noise (their A/A rate does not explain new's), while a field that
    differs between any two legacy calls as often as against new is noise, shown with both rates."""
    legacy, new = backends
    calls = {"legacy": 0}
    now = [1000.0]
    fixed = {"title": False}

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        k = calls["legacy"]
        calls["legacy"] += 1  # per request: the primary (even k), then the A/A call (odd k)
        raced = k % 2 == 1 and k < 24
        items = [{"id": i, "title": f"t{i}" + ("x" if raced else "")} for i in range(3)]
        return web.json_response({"served_by": f"w{k % 2}", "items": items})

    async def new_h(request: web.Request) -> web.StreamResponse:
        items = [{"id": i, "title": f"t{i}" + ("" if fixed["title"] else "!")} for i in range(3)]
        return web.json_response({"served_by": "w1", "items": items})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 1.0"), reread_rate=0.0,
                         aa_rate=1000.0, clock=lambda: now[0])  # fmt: skip
    for _ in range(30):
        await rig.get("/item")
        await rig.shadower.drain()
    now[0] += NOISE_REFRESH_S + 1
    await rig.get("/item")
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert st.methods["GET"].get("aa_pairs") == 31 and st.methods["GET"].aa["$.items[*].title"] == 12
    assert st.get("differed") == 31 and st.get("noise") == 0  # the titles still count, every time
    (report,) = [r for r in build_report(await rig.store.stats(), rig.table).routes if r.name == "item"]
    assert [(n["path"], n["aa_rate"], n["candidate_rate"]) for n in report.noise_rates] == [
        ("$.served_by", 1.0, 1.0)
    ]
    assert ("$.items[*].title", 31) in report.paths
    fixed["title"] = True  # new fixed: what is left is noise only
    await rig.get("/item")
    await rig.shadower.drain()
    assert (await rig.store.stats())["item"].get("noise") == 1


async def test_on_reads_generated_needs_the_control_to_differ_with_itself(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """A read's request id (a new UUID on every call, on both sides) is learned as generated once the A/A
    pairs show it; an integer that is stable on legacy and different on new never is: it differs."""
    legacy, new = backends
    now = [1000.0]

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"request_id": str(uuid.uuid4()), "count": 3})

    async def new_h(request: web.Request) -> web.StreamResponse:
        bad = request.query.get("bad") is not None
        return web.json_response({"request_id": str(uuid.uuid4()), "count": 4 if bad else 3})

    legacy.handler, new.handler = legacy_h, new_h
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 1.0"), reread_rate=0.0,
                         aa_rate=1000.0, clock=lambda: now[0])  # fmt: skip
    for _ in range(MIN_GENERATED + 2):
        await rig.get("/item?bad=1")
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("differed"), st.get("learning")) == (MIN_GENERATED + 2, 0)  # reads are never held
    now[0] += NOISE_REFRESH_S + 1
    await rig.get("/item")
    await rig.get("/item?bad=1")
    await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("generated"), st.get("differed")) == (1, MIN_GENERATED + 3)
    assert st.signatures["$.count"] == 1  # the request id no longer counts; the count does
    (report,) = [r for r in build_report(await rig.store.stats(), rig.table).routes if r.name == "item"]
    assert [(g["path"], g["learned"]) for g in report.generated] == [("$.request_id", True)]


async def test_a_value_that_changes_on_every_call_is_learned_as_noise_from_its_rereads(
    make_rig: RigFactory, backends: tuple[Backend, Backend]
) -> None:
    """An uptime changes on every call of either side: each re-read shows it, so the first differences are
    races, and the primary and its re-read count as an A/A pair; once enough pairs say the control differs
    with itself there as often as new does, the path is noise and the comparisons count (no A/A sampling)."""
    legacy, new = backends
    calls = {"legacy": 0, "new": 0}

    def uptime(side: str, start: float) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            calls[side] += 1
            return web.json_response({"status": "ok", "uptime_s": start + calls[side] / 1000})

        return handler

    legacy.handler, new.handler = uptime("legacy", 10.0), uptime("new", 3.0)
    now = [1000.0]
    rig = await make_rig(routes_text(legacy, new, ITEM % "legacy", "aa_sample: 0"), clock=lambda: now[0])
    for _ in range(20):  # the re-read budget's burst: the clock stands still
        await rig.get("/item")
        await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("raced"), st.get("compared"), st.get("aa_pairs")) == (20, 0, 20)
    now[0] += NOISE_REFRESH_S + 1  # the learning is read again
    for _ in range(10):
        await rig.get("/item")
        await rig.shadower.drain()
    st = (await rig.store.stats())["item"]
    assert (st.get("raced"), st.get("compared"), st.get("noise")) == (20, 10, 10)
    (report,) = [r for r in build_report(await rig.store.stats(), rig.table).routes if r.name == "item"]
    assert report.match_rate == 1.0 and report.paths == [] and report.noise_paths == [("$.uptime_s", 20)]
