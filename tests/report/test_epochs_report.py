"""The report per epoch and per method, and stable verdicts (hysteresis) on an injected clock; the
`strangler report --reset` and `--epoch all` commands against real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import io
import textwrap
from pathlib import Path

import orjson
from aiohttp import web
from support.clock import ManualClock
from support.memstore import MemoryStore
from support.waiting import eventually

from proxy.ops.admin import AdminState
from proxy.ops.metrics import RequestStats, local_registry
from proxy.report import html as report_html
from proxy.report.cli import main, render
from proxy.report.model import NOT_ENOUGH, NOT_READY, READY, Report, gather
from proxy.routing.table import Route, RouteTable, parse_routes
from proxy.shadow.noise import MIN_AA_PAIRS
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import DiffStore

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 10, match_threshold: 0.95, latency_ratio: 0, SETTINGS}
    routes:
      - name: users
        match: {methods: [GET], path: "/users/{id}"}
        target: legacy
        shadow: {sample: 1.0}
      - name: users-write
        match: {methods: [GET, DELETE], path: "/accounts/{id}"}
        target: legacy
        shadow: {sample: 1.0, writes: true}
      - name: posts
        match: {methods: [GET, DELETE], path: "/posts/{id}"}
        target: legacy
        shadow: {sample: 1.0}
""")
INSTANT = "ready_min_s: 0, ready_min_count: 0"


def table(settings: str = INSTANT, flip: bool = False) -> RouteTable:
    text = ROUTES.replace("SETTINGS", settings)
    if flip:
        users = 'name: users\n    match: {methods: [GET], path: "/users/{id}"}\n    target: '
        text = text.replace(users + "legacy", users + "new")
    return parse_routes(text, "routes.yaml")


def route(t: RouteTable, name: str) -> Route:
    return next(r for r in t.routes if r.name == name)


def record(
    store: DiffStore, r: Route, method: str, matched: int = 0, differed: int = 0, seen: int = 0,
    aa: int = MIN_AA_PAIRS,
) -> None:
    """Counts of one method; ``aa`` A/A pairs where the control agreed with itself (enough to judge)."""
    key = store.key(r, method)
    for _ in range(aa if differed else 0):
        store.aa_pair(key, ())
    for _ in range(seen):
        store.count(key, "seen")
        store.count(key, "sampled")
    for _ in range(matched):
        store.matched(key, 0.001, 0.001)
    for _ in range(differed):
        store.count(key, "compared")
        store.differed(key, "$.name", ("$.name",))
        store.count(key, "differed")


async def report_at(store: MemoryStore, t: RouteTable, clock: ManualClock, history: bool = False) -> Report:
    await store.flush()
    return await gather(store, t, history=history, now=clock())


async def test_a_method_never_compared_keeps_the_route_from_ready() -> None:
    """GET matches at 100 %, DELETE (shadowed: writes: true) was sampled but never compared: not READY,
    and the report says which method is missing, in every format."""
    t = table()
    store, clock = MemoryStore(), ManualClock()
    record(store, route(t, "users-write"), "GET", matched=50, seen=50)
    record(store, route(t, "users-write"), "DELETE", seen=4)
    rr = (await report_at(store, t, clock)).route("users-write")
    assert rr is not None and rr.verdict == NOT_ENOUGH
    assert rr.reasons == ["DELETE: 0 of the 10 comparisons needed (min_compared)"]
    by = {m.method: m for m in rr.methods}
    assert (by["GET"].verdict, by["GET"].compared, by["GET"].match_rate) == (READY, 50, 1.0)
    assert (by["DELETE"].verdict, by["DELETE"].seen, by["DELETE"].compared) == (NOT_ENOUGH, 4, 0)
    report = await report_at(store, t, clock)
    for fmt in ("terminal", "markdown", "html"):
        text = render(report, fmt)
        assert "DELETE: 4 seen, 0 compared" in text
        assert "GET: 50 seen, 50 compared, 100.0% match: READY" in text
    doc = orjson.loads(render(report, "json"))
    (users_write,) = [r for r in doc["routes"] if r["name"] == "users-write"]
    methods = [(m["method"], m["verdict"]) for m in users_write["methods"]]
    assert methods == [("DELETE", NOT_ENOUGH), ("GET", READY)]
    # Once DELETE has its comparisons and matches, the route is READY; a differing DELETE makes it NOT READY.
    record(store, route(t, "users-write"), "DELETE", matched=10)
    assert (await report_at(store, t, clock)).route("users-write").verdict == READY  # type: ignore[union-attr]
    record(store, route(t, "users-write"), "DELETE", differed=10)
    rr = (await report_at(store, t, clock)).route("users-write")
    assert rr is not None and rr.verdict == NOT_READY and rr.reasons[0].startswith("DELETE: match rate 50.0%")


async def test_a_declared_method_never_seen_keeps_the_route_from_ready() -> None:
    """users-write declares GET and DELETE with writes: true: READY needs DELETE compared too, even
    when no DELETE has come yet."""
    t = table()
    store, clock = MemoryStore(), ManualClock()
    record(store, route(t, "users-write"), "GET", matched=50, seen=50)
    rr = (await report_at(store, t, clock)).route("users-write")
    assert rr is not None and rr.verdict == NOT_ENOUGH
    assert rr.reasons == ["DELETE: 0 of the 10 comparisons needed (min_compared)"]
    methods = [(m.method, m.seen, m.verdict) for m in rr.methods]
    assert methods == [("DELETE", 0, NOT_ENOUGH), ("GET", 50, READY)]


async def test_an_auto_routes_shadowed_writes_are_required() -> None:
    """On a `target: auto` route with writes: true, writes are dry-run while legacy serves them, so READY
    needs the declared DELETE compared, as on a legacy route."""
    text = ROUTES.replace("SETTINGS", INSTANT).replace(
        'path: "/accounts/{id}"}\n    target: legacy', 'path: "/accounts/{id}"}\n    target: auto'
    )
    t = parse_routes(text.replace("routes:\n", "rollout: {stages: [0, 100]}\nroutes:\n", 1), "routes.yaml")
    assert route(t, "users-write").target == "auto"
    store, clock = MemoryStore(), ManualClock()
    record(store, route(t, "users-write"), "GET", matched=50, seen=50)
    rr = (await report_at(store, t, clock)).route("users-write")
    assert rr is not None and rr.verdict == NOT_ENOUGH
    assert rr.reasons == ["DELETE: 0 of the 10 comparisons needed (min_compared)"]


async def test_a_method_that_is_not_compared_is_not_required() -> None:
    """Without writes: true a DELETE is seen but never compared: the route's verdict is its GETs'."""
    t = table()
    store, clock = MemoryStore(), ManualClock()
    record(store, route(t, "posts"), "GET", matched=20, seen=20)
    store.count(store.key(route(t, "posts"), "DELETE"), "seen", 3)
    rr = (await report_at(store, t, clock)).route("posts")
    assert rr is not None and rr.verdict == READY
    assert [(m.method, m.verdict) for m in rr.methods] == [("DELETE", ""), ("GET", READY)]


async def test_a_read_is_not_judged_on_its_match_rate_before_its_aa_pairs() -> None:
    """A read that differs before MIN_AA_PAIRS A/A pairs are in is NOT ENOUGH DATA (learning what is noise),
    not NOT READY: the pairs decide whether a race explains it; with them in and the control stable, NOT
    READY. A latency or error reason is not held back."""
    t = table()
    store, clock = MemoryStore(), ManualClock()
    record(store, route(t, "users"), "GET", matched=30, differed=30, aa=MIN_AA_PAIRS - 1)
    rr = (await report_at(store, t, clock)).route("users")
    assert rr is not None and rr.verdict == NOT_ENOUGH
    pairs = f"{MIN_AA_PAIRS - 1} of the {MIN_AA_PAIRS} A/A pairs needed"
    assert rr.reasons == [f"learning what is noise: {pairs} (match rate 50.0% until then)"]
    store.aa_pair(store.key(route(t, "users"), "GET"), ())
    rr = (await report_at(store, t, clock)).route("users")
    assert rr is not None and rr.verdict == NOT_READY and rr.reasons[0].startswith("match rate 50.0%")


async def test_the_report_shows_the_current_epoch_only() -> None:
    """After a flip the report counts only the new epoch and says since when and why; the earlier epoch
    is history (``--epoch all``)."""
    before, after = table(), table(flip=True)
    store, clock = MemoryStore(wall=ManualClock(5000.0)), ManualClock(5000.0)
    record(store, route(before, "users"), "GET", matched=30, differed=30)
    rr = (await report_at(store, before, clock)).route("users")
    assert rr is not None and rr.verdict == NOT_READY and rr.compared == 60
    store.wall = ManualClock(5100.0)
    record(store, route(after, "users"), "GET", matched=12)
    clock.advance(14 * 60 + 100)
    report = await report_at(store, after, clock)
    rr = report.route("users")
    assert rr is not None and (rr.verdict, rr.compared, rr.differed, rr.paths) == (READY, 12, 0, [])
    assert rr.epoch is not None and rr.epoch["reason"] == "the flip (legacy -> new)"
    assert rr.epoch["age_s"] == 840
    assert "since the flip (legacy -> new), 14 min, 12 compared" in render(report, "terminal")
    full = await report_at(store, after, clock, history=True)
    rr = full.route("users")
    assert rr is not None and [(e["reason"], e["compared"], e["differed"]) for e in rr.history] == [
        ("first recorded", 60, 30), ("the flip (legacy -> new)", 12, 0)
    ]
    assert "history: epoch" in render(full, "markdown") and 'id="epochs"' in render(full, "html")


async def test_ready_needs_the_threshold_held_for_time_and_count_then_holds_with_a_margin() -> None:
    """Hysteresis on a ManualClock: READY is not granted before ready_min_s and ready_min_count; once
    READY it stays at threshold - margin/2 (in every report), and is lost below threshold - margin."""
    t = table("ready_min_s: 60, ready_min_count: 50, ready_margin: 0.04")
    users = route(t, "users")
    store, clock = MemoryStore(), ManualClock()

    async def verdict() -> tuple[str, list[str]]:
        rr = (await report_at(store, t, clock)).route("users")
        assert rr is not None
        return rr.verdict, rr.reasons

    record(store, users, "GET", matched=100)
    got = await verdict()
    assert got[0] == NOT_ENOUGH and "held for 0 of 60 s" in got[1][0] and "0 of 50 comparisons" in got[1][0]
    clock.advance(59)
    record(store, users, "GET", matched=60)
    assert (await verdict())[0] == NOT_ENOUGH  # 60 comparisons, but 59 s
    clock.advance(1)
    assert await verdict() == (READY, [])
    # 186 / 200 = 93 %: below the 95 % threshold but above 95 - 4 = 91 %: READY is kept, report after report.
    record(store, users, "GET", matched=26, differed=14)
    for _ in range(3):
        clock.advance(5)
        assert await verdict() == (READY, [])
    # 186 / 205 = 90.7 %: below threshold - margin: READY is lost.
    record(store, users, "GET", differed=5)
    got = await verdict()
    assert got[0] == NOT_READY and any("left READY: below 91.0%" in why for why in got[1])
    # Back at 93 %: not READY again (it would have to hold at the full threshold first).
    record(store, users, "GET", matched=200)
    got = await verdict()
    assert got[0] == NOT_ENOUGH and "holding" in got[1][0]


async def test_count_alone_is_not_enough_either() -> None:
    t = table("ready_min_s: 10, ready_min_count: 50")
    users = route(t, "users")
    store, clock = MemoryStore(), ManualClock()
    record(store, users, "GET", matched=20)
    assert (await report_at(store, t, clock)).route("users").verdict == NOT_ENOUGH  # type: ignore[union-attr]
    clock.advance(3600)
    record(store, users, "GET", matched=49)
    assert (await report_at(store, t, clock)).route("users").verdict == NOT_ENOUGH  # type: ignore[union-attr]
    record(store, users, "GET", matched=1)
    assert (await report_at(store, t, clock)).route("users").verdict == READY  # type: ignore[union-attr]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_reset_starts_a_new_epoch_the_report_shows(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """`strangler report --reset users` against the gateway's Redis: the report shows the new epoch (its
    counts from zero, "reset by hand"), `--epoch all` the earlier one too; the stable state is in Redis."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("SETTINGS", INSTANT))
    users = route(table(), "users")

    async def gateway(matched: int, differed: int) -> None:
        store = await RedisPgStore.connect(redis_url, None, redis_prefix)
        record(store, users, "GET", matched=matched, differed=differed)
        await store.aclose()

    asyncio.run(gateway(5, 20))
    base = ["--routes", str(routes), "--redis-url", redis_url, "--prefix", redis_prefix]
    code, out, _ = run([*base, "--format", "json"])
    (doc,) = [r for r in orjson.loads(out)["routes"] if r["name"] == "users"]
    assert code == 0 and doc["compared"] == 25 and doc["verdict"] == NOT_READY
    code, out, _ = run([*base, "--reset", "users"])
    assert code == 0 and "new epoch" in out and "reset by hand" in out
    asyncio.run(gateway(12, 0))  # a gateway started now records into the new epoch
    code, out, _ = run([*base, "--format", "json"])
    (doc,) = [r for r in orjson.loads(out)["routes"] if r["name"] == "users"]
    assert (doc["compared"], doc["differed"], doc["verdict"]) == (12, 0, READY)
    assert doc["epoch"]["reason"] == "reset by hand" and doc["history"] == []
    assert "ready_since" in doc["state"]
    code, out, _ = run([*base, "--format", "json", "--epoch", "all"])
    (doc,) = [r for r in orjson.loads(out)["routes"] if r["name"] == "users"]
    history = [(e["reason"], e["compared"]) for e in doc["history"]]
    assert history == [("first recorded", 25), ("reset by hand", 12)]
    code, out, _ = run([*base, "--epoch", "all"])
    assert code == 0 and "history: epoch" in out and "since the reset by hand" in out
    code, _, err = run([*base, "--reset", "nobody"])
    assert code == 2 and "nothing recorded" in err


async def test_the_admin_app_keeps_the_stable_verdicts_moving() -> None:
    """Nobody reads the report, yet the admin app's keeper reads it and saves where the hold began."""
    t = table("ready_min_s: 60, ready_min_count: 5")
    store = MemoryStore()
    record(store, route(t, "users"), "GET", matched=20)
    await store.flush()
    app = web.Application()
    report_html.setup(app, AdminState(t, "routes.yaml", local_registry(RequestStats())))
    app[report_html.REPORT_STORE] = store
    keeper = asyncio.get_running_loop().create_task(report_html.keep_verdicts(app, interval=0.01))

    async def held() -> bool:
        st = (await store.stats())["users"]
        return "held_since" in st.state and st.state.get("held_from") == 20.0

    try:
        await eventually(held, what="the keeper saved where the hold began")
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
