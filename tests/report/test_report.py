"""report.py: verdicts, noise applied at report time, renderers, --suggest, and `strangler report` itself."""

from __future__ import annotations

import asyncio
import io
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.memstore import MemoryStore

from proxy.report.cli import main, render, suggest
from proxy.report.html import render_html
from proxy.report.model import NOT_ENOUGH, NOT_READY, READY, build_report, gather
from proxy.report.text import answered, render_markdown, render_terminal
from proxy.routing.table import parse_routes
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.store import RouteStats, Sample, bucket_of

ROUTES = textwrap.dedent("""\
    upstreams:
      legacy: {url: "http://127.0.0.1:3000"}
      new: {url: "http://127.0.0.1:8000"}
    default: legacy
    shadow: {min_compared: 10, match_threshold: 0.95, ready_min_s: 0, ready_min_count: 0}
    routes:
      - name: users-get
        match: {methods: [GET], path: "/users/{id}"}
        target: legacy
        shadow: {sample: 0.5}
      - name: users-write
        match: {methods: [PATCH], path: "/users/{id}"}
        target: legacy
        shadow: {sample: 1.0, writes: true}
      - name: posts
        match: {methods: [GET], path: /posts}
        target: legacy
        shadow: {sample: 0.1}
      - name: health
        match: {methods: [GET], path: /health}
        target: new
        shadow: {sample: 0.1}
""")
TABLE = parse_routes(ROUTES, "routes.yaml")


def stats(
    compared: int,
    differed: dict[str, int] | None = None,
    noise: dict[str, int] | None = None,
    legacy_s: float = 0.01,
    new_s: float = 0.01,
    errors: tuple[int, int] = (0, 0),
) -> RouteStats:
    differed = differed or {}
    paths: dict[str, int] = {}
    for sig, n in differed.items():
        for p in sig.split(" "):
            paths[p] = paths.get(p, 0) + n
    return RouteStats(
        "x",
        counters={"seen": compared, "compared": compared, "matched": compared - sum(differed.values()),
                  "errors_control": errors[0], "errors_candidate": errors[1]},
        latency={"control": {bucket_of(legacy_s): compared}, "candidate": {bucket_of(new_s): compared}},
        paths=paths, signatures=differed, noise=noise or {},
    )  # fmt: skip


def test_verdicts() -> None:
    """READY, NOT READY with reasons (match, latency, errors) and NOT ENOUGH DATA."""
    report = build_report(
        {
            "users-get": stats(100, {"$.name": 1}),
            "users-write": stats(100, {"$.name": 20}, new_s=0.5, errors=(0, 3)),
            "posts": stats(5),
        },
        TABLE,
    )
    by = {r.name: r for r in report.routes}
    assert by["users-get"].verdict == READY and by["users-get"].match_rate == pytest.approx(0.99)
    bad = by["users-write"]
    assert bad.verdict == NOT_READY and len(bad.reasons) == 3
    assert (
        "match rate 80.0%" in bad.reasons[0] and "p99" in bad.reasons[1] and "new failed 3" in bad.reasons[2]
    )
    assert by["posts"].verdict == NOT_ENOUGH
    assert by["health"].verdict == NOT_ENOUGH and by["health"].compared == 0  # shadowed, no data yet
    assert by["users-get"].latency_ms["legacy"]["p99"] == pytest.approx(10.0, rel=0.16)


def test_an_unreached_shadow_side_is_not_an_error() -> None:
    """New refusing the shadow's connections (down, then back) leaves a route whose comparisons all
    matched READY and says how many calls were refused; new's errors make it NOT READY."""
    down = stats(100)
    down.counters["unreached_candidate"] = 40
    report = build_report({"users-get": down, "users-write": stats(100, errors=(0, 40))}, TABLE)
    by = {r.name: r for r in report.routes}
    assert by["users-get"].verdict == READY and by["users-get"].error_rate["new"] == 0
    assert "shadow calls refused (side down, not counted as errors): new 40" in render_terminal(report)
    assert by["users-write"].verdict == NOT_READY


def test_latency_verdict_uses_median_below_100_timings() -> None:
    """With few timings the median decides (p99 would be one outlier); with 100+ the p99 does."""
    few = stats(20, legacy_s=0.01, new_s=0.01)
    few.latency["candidate"] = {bucket_of(0.01): 19, bucket_of(0.5): 1}  # one slow call
    (r,) = [x for x in build_report({"posts": few}, TABLE).routes if x.name == "posts"]
    assert r.verdict == READY
    few.latency["candidate"] = {bucket_of(0.05): 20}
    (r,) = [x for x in build_report({"posts": few}, TABLE).routes if x.name == "posts"]
    assert r.verdict == NOT_READY and r.reasons[0].startswith("new p50")
    many = stats(200)
    many.latency["candidate"] = {bucket_of(0.01): 190, bucket_of(0.5): 10}
    (r,) = [x for x in build_report({"posts": many}, TABLE).routes if x.name == "posts"]
    assert r.verdict == NOT_READY and r.reasons[0].startswith("new p99")


def _learned(st: RouteStats, aa_pairs: int, aa_uptime: int) -> RouteStats:
    """``st`` with GET's learning counts: ``aa_uptime`` of ``aa_pairs`` A/A pairs differed at uptime_s."""
    st.counters.update({"aa_pairs": aa_pairs, "raced": 3})
    st.aa = {"$.uptime_s": aa_uptime}
    st.cand = dict(st.paths)
    get = RouteStats(st.route, dict(st.counters), dict(st.latency), dict(st.paths), dict(st.signatures),
                     aa=dict(st.aa), cand=dict(st.cand))  # fmt: skip
    st.methods["GET"] = get  # the route's only method: its learning is the route's
    return st


def test_noise_is_applied_at_report_time() -> None:
    """Signatures made only of noise paths count as matches; mixed ones still count as differences. Noise
    is what the statistical test says (proxy.shadow.noise), shown with both rates; races apart."""
    st = _learned(stats(100, {"$.uptime_s": 60, "$.name $.uptime_s": 2}), aa_pairs=40, aa_uptime=25)
    (r,) = [x for x in build_report({"health": st}, TABLE).routes if x.name == "health"]
    assert (r.differed, r.noise, r.match_rate) == (2, 60, pytest.approx(0.98))
    assert r.paths == [("$.name", 2)] and r.noise_paths == [("$.uptime_s", 25)]
    # The learning's denominator counts the 3 raced comparisons too.
    row = {"method": "GET", "path": "$.uptime_s", "aa_rate": 25 / 40, "candidate_rate": 62 / 103,
           "aa_pairs": 40, "aa_diffs": 25, "compared": 103}  # fmt: skip
    assert r.noise_rates == [row]
    assert r.verdict == READY and r.raced == 3
    text = render_terminal(build_report({"health": st}, TABLE))
    assert "noise GET $.uptime_s: A/A 62.5% of 40, new 60.2% of 103" in text
    assert "3 reads changed during the comparison" in text
    page = render_html(build_report({"health": st}, TABLE), "health")
    assert "noise GET <code>$.uptime_s</code>: A/A 62.5% of 40, new 60.2% of 103" in page
    assert "3 reads changed during the comparison" in page


def test_a_few_aa_races_do_not_make_noise() -> None:
    """Two A/A differences in 40 pairs do not excuse a path the candidate differs at 62 times in 100."""
    st = _learned(stats(100, {"$.uptime_s": 60, "$.name $.uptime_s": 2}), aa_pairs=40, aa_uptime=2)
    (r,) = [x for x in build_report({"health": st}, TABLE).routes if x.name == "health"]
    assert (r.differed, r.noise, r.noise_rates) == (62, 0, [])
    assert r.verdict == NOT_READY


def test_renderers_show_the_same_facts() -> None:
    """terminal, markdown, json and html all name the routes, paths and verdicts."""
    report = build_report({"users-get": stats(100, {"$.name": 1}), "posts": stats(3)}, TABLE)
    for fmt in ("terminal", "markdown", "html"):
        text = render(report, fmt)
        assert "users-get" in text and "$.name" in text and READY in text and NOT_ENOUGH in text, fmt
    doc = orjson.loads(render(report, "json"))
    assert {r["name"]: r["verdict"] for r in doc["routes"]}["users-get"] == READY
    assert doc["min_compared"] == 10


def test_suggest_flips_ready_routes_on_legacy() -> None:
    """--suggest flips READY legacy routes to new (writes: false for write routes); the result is valid."""
    report = build_report(
        {"users-get": stats(100), "users-write": stats(100), "posts": stats(100, {"$.x": 50})}, TABLE
    )
    text, flipped = suggest(ROUTES, TABLE, report)
    assert flipped == ["users-get", "users-write"]
    table = parse_routes(text, "flipped.yaml")
    targets = {r.name: (r.target, r.shadow.writes if r.shadow else None) for r in table.routes}
    assert targets == {"users-get": ("new", False), "users-write": ("new", False),
                       "posts": ("legacy", False), "health": ("new", False)}  # fmt: skip


def seed(redis_url: str, prefix: str, db: str | None) -> None:
    async def go() -> None:
        store = await RedisPgStore.connect(redis_url, db, prefix)
        try:
            for _ in range(12):
                store.count("users-get", "seen")
                store.count("users-get", "compared")
                store.latency("users-get", "control", 0.01)
                store.latency("users-get", "candidate", 0.01)
            store.count("users-get", "matched", 11)
            store.differed("users-get", "$.name", ("$.name",))
            change = {"path": "$.name", "kind": "changed", "control": "Al", "candidate": "Al!"}
            example = Sample("users-get", "$.name", "GET", "/users/1", "legacy", 200, 200, [change],
                             request_id="rid-7")  # fmt: skip
            store.sample("users-get", example)
        finally:
            await store.aclose()

    asyncio.run(go())


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_report_formats(redis_url: str, redis_prefix: str, shadow_db: str, routes_file: Path) -> None:
    """`strangler report` reads Redis and PostgreSQL and prints the table, JSON, or one route's examples."""
    seed(redis_url, redis_prefix, shadow_db)
    base = ["--routes", str(routes_file), "--redis-url", redis_url, "--database-url", shadow_db,
            "--prefix", redis_prefix]  # fmt: skip
    code, out, err = run(base)
    assert code == 0 and err == ""  # no progress output: stderr is not a terminal
    table = out[out.index("\nROUTE ", out.index("NEXT ACTION")) :]  # after the progress overview
    line = next(x for x in table.splitlines() if x.startswith("users-get"))
    assert "12" in line and "91.7%" in line and NOT_READY in line
    code, out, _ = run([*base, "--format", "json"])
    assert orjson.loads(out)["routes"][0]["paths"] == [["$.name", 1]]
    code, out, _ = run([*base, "--route", "users-get"])
    assert code == 0 and "example: GET /users/1" in out and '"Al!"' in out and "posts" not in out
    assert "request id rid-7" in out  # the sample's request, kept through PostgreSQL
    code, out, _ = run([*base, "--route", "users-get", "--format", "markdown"])
    assert code == 0 and "`GET /users/1` (request id `rid-7`)" in out
    code, out, _ = run([*base, "--route", "users-get", "--format", "json"])
    assert orjson.loads(out)["routes"][0]["examples"][0]["request_id"] == "rid-7"
    code, _, err = run([*base, "--route", "nope"])
    assert code == 2 and "no route named 'nope'" in err


def test_cli_suggest_prints_unified_diff(redis_url: str, redis_prefix: str, routes_file: Path) -> None:
    """--suggest prints a unified diff of the routes file flipping the READY route."""

    async def go() -> None:
        store = await RedisPgStore.connect(redis_url, None, redis_prefix)
        store.count("posts", "compared", 10)
        store.count("posts", "matched", 10)
        await store.aclose()

    asyncio.run(go())
    code, out, _ = run(["--routes", str(routes_file), "--redis-url", redis_url, "--prefix", redis_prefix,
                        "--suggest"])  # fmt: skip
    assert code == 0
    assert out.startswith(f"--- a/{routes_file}")
    assert [x for x in out.splitlines() if x.startswith(("-  ", "+  "))] == [
        "-    target: legacy",
        "+    target: new",
    ]


def test_cli_errors_are_explained(routes_file: Path, tmp_path: Path) -> None:
    """Missing Redis URL, a bad routes file and an unreachable Redis exit 2 with a message."""
    code, _, err = run(["--routes", str(routes_file), "--redis-url", ""])
    assert code == 2 and "REDIS_URL" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: 3\n")
    code, _, err = run(["--routes", str(bad), "--redis-url", "redis://127.0.0.1:1/0"])
    assert code == 2 and "cannot load" in err
    code, _, err = run(["--routes", str(routes_file), "--redis-url", "redis://127.0.0.1:1/0"])
    assert code == 2 and "shadow stores" in err


async def test_gather_includes_examples() -> None:
    """gather() reads stats and, for the requested route, its newest samples."""
    store = MemoryStore()
    store.count("posts", "compared")
    store.sample("posts", Sample("posts", "$.a", "GET", "/posts", "legacy", 200, 500, [], request_id="r-9"))
    await store.flush()
    report = await gather(store, TABLE, "posts")
    posts = report.route("posts")
    assert posts is not None and posts.examples[0]["candidate_status"] == 500
    assert "served by legacy, request id <code>r-9</code></p>" in render_html(report, "posts")
    posts.examples[0]["request_id"] = ""  # a sample stored before samples kept it
    assert "request id" not in render_html(report, "posts") and "request id" not in render_markdown(report)


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_html_format(
    redis_url: str, redis_prefix: str, routes_file: Path
) -> None:
    """A progress line goes to stderr when it is a TTY (and is cleared); --format html prints the page."""
    out, err = io.StringIO(), FakeTerminal()
    argv = [
        "--routes",
        str(routes_file),
        "--redis-url",
        redis_url,
        "--prefix",
        redis_prefix,
        "--format",
        "html",
    ]
    assert main(argv, out, err) == 0
    assert "reading counters" in err.getvalue() and err.getvalue().endswith("\r\x1b[2K")
    assert out.getvalue().startswith("<!doctype html>") and 'data-route="users-get"' in out.getvalue()


def test_cli_unmigrated_database_says_migrate(
    redis_url: str, redis_prefix: str, routes_file: Path, make_database: Any
) -> None:
    """Example diffs from a database without the shadow_diffs table: exit 2 telling to run the migrations."""
    bare = make_database(migrated=False)
    argv = ["--routes", str(routes_file), "--redis-url", redis_url, "--database-url", bare,
            "--prefix", redis_prefix, "--route", "posts"]  # fmt: skip
    code, _, err = run(argv)
    assert code == 2 and "strangler migrate" in err


def test_example_side_without_latency_says_not_timed() -> None:
    """An example side with no measured latency (a pipelined shadow call) reads 'not timed', not 'None'."""
    assert answered(200, 1.5) == "200 in 1.5 ms"
    assert answered(200, None) == "200 (not timed)"
    assert answered(None, None) == "no answer"


def test_latency_ratio_setting_decides_whether_latency_gates_the_verdict() -> None:
    """A slower candidate is NOT READY under the default latency_ratio, READY with latency_ratio 0 or a
    generous one: the ratio is a routes.yaml setting."""
    latency = {"control": {bucket_of(0.010): 200}, "candidate": {bucket_of(0.100): 200}}
    slow = RouteStats("users-get", counters={"compared": 200, "matched": 200}, latency=latency)
    for ratio, verdict in ((None, NOT_READY), (0, READY), (20, READY)):
        base = "min_compared: 10, match_threshold: 0.95, ready_min_s: 0, ready_min_count: 0"
        shadow = f"{{{base}}}" if ratio is None else f"{{{base}, latency_ratio: {ratio}}}"
        text = ROUTES.replace(f"shadow: {{{base}}}", f"shadow: {shadow}", 1)
        report = build_report({"users-get": slow}, parse_routes(text, "r.yaml"))
        assert report.route("users-get").verdict == verdict, ratio
