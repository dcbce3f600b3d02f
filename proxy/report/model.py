"""The shadow-comparison report's model, built from the stores (renderers: text.py, html.py; CLI: cli.py).

Per route: requests seen, compared, match rate, the differing paths with counts (noise apart, each
noise path with its A/A and candidate rates; generated paths with their rate; races counted apart), latency
p50/p99 of legacy (control) and new (candidate), error rates, and a verdict: READY (enough comparisons,
match rate at the threshold, new p99 no slower than legacy's within a tolerance (the median when a side
has fewer than 100 timings, where "p99" would be a single outlier), no more errors), NOT
READY (with the reasons) or NOT ENOUGH DATA. Noise is applied when the report is built, so a difference
recorded before its path was learned as noise is still counted as noise.

COMPARISON UNAVAILABLE (with the reason) is said where no comparison can be made, instead of a silent
skip or a stale verdict: the shadow side is not answering (``UNANSWERED_MIN`` shadow calls in a row
failed, from the ``unanswered:<side>:<kind>`` streak counters of ``proxy.shadow.unanswered``; this
wins over any other verdict, since no new evidence arrives); a shadowed route of writes only, served
by new (after its flip: legacy has no dry run, so its writes are never compared); and, while a route
has too few comparisons for a verdict, what it did see could not be compared (event streams,
WebSockets, writes without a dry-run secret).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from proxy.report.stable import settle
from proxy.routing.model import AUTO
from proxy.routing.table import Route, RouteTable, ShadowSettings
from proxy.shadow.noise import MIN_AA_PAIRS, READS, learned_from, learned_rows
from proxy.shadow.store import DiffStore, Epoch, RouteStats, Sample

__all__ = [
    "NOT_ENOUGH", "NOT_READY", "READY", "UNANSWERED_MIN", "UNAVAILABLE", "MethodReport", "Report",
    "RouteReport", "build_report", "gather",
]  # fmt: skip

READY: Final = "READY"
NOT_READY: Final = "NOT READY"
NOT_ENOUGH: Final = "NOT ENOUGH DATA"
UNAVAILABLE: Final = "COMPARISON UNAVAILABLE"
# Shadow calls failed in a row (summed over replicas) that make a route's comparison unavailable.
UNANSWERED_MIN: Final = 5
# New may be shadow.latency_ratio times slower at p99, plus an absolute slack for the 15 % histogram buckets.
P99_SLACK_S: Final = 0.005
P99_MIN_SAMPLES: Final = 100


@dataclass
class MethodReport:
    """One method of a route: its own counts and verdict ("" for a method that is not compared)."""

    method: str
    seen: int
    compared: int
    match_rate: float | None
    verdict: str
    reasons: list[str]


@dataclass
class RouteReport:
    """One route's line in the report (latencies in milliseconds)."""

    name: str
    target: str | None
    shadowed: bool
    counters: dict[str, int]
    compared: int
    differed: int
    noise: int
    match_rate: float | None
    paths: list[tuple[str, int]]
    noise_paths: list[tuple[str, int]]
    latency_ms: dict[str, dict[str, float | None]]
    error_rate: dict[str, float | None]
    verdict: str
    reasons: list[str]
    examples: list[dict[str, Any]] = field(default_factory=list)
    # How long sampled writes waited for new's dry run before legacy got them (p50, p99, count), or None.
    write_wait_ms: dict[str, float | None] | None = None
    # Learned per method (proxy.shadow.noise): noise paths with their A/A and candidate rates, generated
    # paths with their same-shape rate; reads whose data changed during the comparison (not compared).
    noise_rates: list[dict[str, Any]] = field(default_factory=list)
    generated: list[dict[str, Any]] = field(default_factory=list)
    raced: int = 0
    methods: list[MethodReport] = field(default_factory=list)
    # The epoch counted ({id, started, reason, age_s}) and, when asked, every kept one (oldest first).
    epoch: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, float] = field(default_factory=dict)  # the stable verdict's state (proxy.report.stable)
    state_changed: bool = False  # the state is to be saved
    # Requests sent to new but served by legacy, by reason (connect, timeout, reset, 5xx, circuit: the
    # breaker was open), in this epoch, summed over the gateway's processes (proxy.server.fallback).
    fallbacks: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    """The whole report: settings used for verdicts and one RouteReport per route."""

    generated_at: float
    source: str | None
    min_compared: int
    match_threshold: float
    routes: list[RouteReport]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``/report.json`` and ``--format json`` document)."""
        doc = asdict(self)
        for route in doc["routes"]:
            route.pop("state_changed", None)  # bookkeeping of gather(), not part of the report
        return doc

    def route(self, name: str) -> RouteReport | None:
        """The named route's report, if any."""
        return next((r for r in self.routes if r.name == name), None)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _rates(st: RouteStats, noise_set: frozenset[str]) -> tuple[int, int, int, float | None]:
    """(compared, differed, noise, match rate) with the noise known now (``noise_set``, learned by
    proxy.shadow.noise's test): a signature is real if any of its paths is not noise, so a difference
    recorded before its path was learned as noise is noise."""
    compared = st.get("compared")
    differed = sum(n for sig, n in st.signatures.items() if any(p not in noise_set for p in sig.split(" ")))
    differed = min(differed, compared)
    matched_or_noise = compared - differed
    noise = max(0, matched_or_noise - st.get("matched"))
    return compared, differed, noise, matched_or_noise / compared if compared else None


def _latency(st: RouteStats) -> dict[str, dict[str, float | None]]:
    return {
        label: {"p50": _ms(st.percentile(side, 0.5)), "p99": _ms(st.percentile(side, 0.99))}
        for label, side in (("legacy", "control"), ("new", "candidate"))
    }


_COMPARED_SAFE: Final = frozenset({"GET", "HEAD"})  # compared without writes: true (proxy.shadow.judge)


def _required(route: Route | None, st: RouteStats) -> list[str]:
    """The methods a route's verdict needs: every method it declares or served that is compared (a read,
    or a write with ``writes: true`` while legacy serves, or may: ``target: auto``), and any that was
    sampled. HEAD is covered by GET. (Without per-method data, from before epochs, none: the route's
    totals decide.)"""
    if not st.methods:
        return []
    spec = route.shadow if route is not None else None
    # An auto route's writes are dry-run too while legacy serves them (its epoch spans the rollout).
    writes = spec is not None and spec.writes and route is not None and route.target in ("legacy", AUTO)
    declared = route.methods if route is not None and route.methods is not None else frozenset()
    out = []
    for method in sorted(set(st.methods) | declared):
        ms = st.methods.get(method) or RouteStats(st.route)
        comparable = spec is not None and (ms.get("seen") > 0 or method in declared)
        if (comparable and (method in _COMPARED_SAFE or writes)) or ms.get("sampled") or ms.get("compared"):
            out.append(method)
    if "GET" in out and "HEAD" in out:
        out.remove("HEAD")
    return out


def _raw(
    route: Route | None, st: RouteStats, settings: ShadowSettings, noise: frozenset[str]
) -> tuple[str, list[str], list[MethodReport]]:
    """The verdict now, without stability: every required method judged on its own counts (and the noise
    it learned); ``noise``: the route's, for its totals."""
    required = _required(route, st)
    methods = []
    learning: int | None = None  # the fewest A/A pairs of a read method still learning its noise
    for method in sorted(set(st.methods) | set(required)):
        ms = st.methods.get(method) or RouteStats(st.route)
        counts = ms.path_counts()
        compared, _, _, rate = _rates(ms, learned_from(counts, method).noise)
        pairs = counts.aa_pairs if settings.aa_sample > 0 and method in READS else MIN_AA_PAIRS
        short = pairs if pairs < MIN_AA_PAIRS else None
        if short is not None and method in required:
            learning = short if learning is None else min(learning, short)
        verdict, reasons = ("", []) if method not in required else _verdict(
            compared, rate, _latency(ms), ms, settings, short
        )
        methods.append(MethodReport(method, ms.get("seen"), compared, rate, verdict, reasons))
    if len(required) <= 1:
        compared, _, _, rate = _rates(st, noise)
        verdict, reasons = _verdict(compared, rate, _latency(st), st, settings, learning)
        return verdict, reasons, methods
    judged = [m for m in methods if m.method in required]
    for worst in (NOT_ENOUGH, NOT_READY):
        failing = [m for m in judged if m.verdict == worst]
        if failing:
            return worst, [f"{m.method}: {why}" for m in failing for why in m.reasons], methods
    return READY, [], methods


def _epoch(epoch: Epoch | None, now: float) -> dict[str, Any] | None:
    if epoch is None:
        return None
    return {"id": epoch.id, "started": epoch.started, "reason": epoch.reason,
            "age_s": round(max(0.0, now - epoch.started), 1) if epoch.started else None}  # fmt: skip


def _history(epoch: Epoch, now: float) -> dict[str, Any]:
    return {**(_epoch(epoch, now) or {}), "compared": epoch.compared, "differed": epoch.differed}


def _route_report(
    name: str, st: RouteStats, table: RouteTable | None, settings: ShadowSettings, now: float
) -> RouteReport:
    declared = {r.name: r for r in table.routes} if table else {}
    route = declared.get(name)
    learned = learned_rows(st, route.compare.generated if route else ())
    noise_set = learned.noise  # statistically learned (proxy.shadow.noise), never a generated path
    compared, differed, noise, rate = _rates(st, noise_set)
    paths = sorted(((p, n) for p, n in st.paths.items() if p not in noise_set), key=lambda x: (-x[1], x[0]))
    aa_counts: dict[str, int] = {}
    for row in learned.noise_rows:
        aa_counts[row["path"]] = aa_counts.get(row["path"], 0) + row["aa_diffs"]
    noise_paths = sorted(aa_counts.items(), key=lambda x: (-x[1], x[0]))
    latency = _latency(st)
    attempts = compared + st.get("errors_control") + st.get("errors_candidate")
    errors = {
        "legacy": st.get("errors_control") / attempts if attempts else None,
        "new": st.get("errors_candidate") / attempts if attempts else None,
    }
    why_not = _unavailable(route, st, compared, settings)
    state = st.state
    verdict, reasons, methods = _raw(route, st, settings, noise_set)
    if why_not:
        verdict, reasons = UNAVAILABLE, why_not
    else:
        lower = replace(settings, match_threshold=max(0.0, settings.match_threshold - settings.ready_margin))
        keep = _raw(route, st, lower, noise_set)[0]
        outcome = settle(verdict == READY, keep == READY, compared, st.state, settings, now)
        state = outcome.state
        if outcome.ready:
            verdict, reasons = READY, []
        elif verdict == READY:  # holding: not yet READY for long enough
            verdict, reasons = NOT_ENOUGH, outcome.reasons
        else:
            reasons = reasons + outcome.reasons
    return RouteReport(
        name=name,
        target=route.target if route else None,
        shadowed=bool(route and route.shadow),
        counters={k: st.get(k) for k in sorted(set(st.counters) | _SHOWN)},
        compared=compared,
        differed=differed,
        noise=noise,
        match_rate=rate,
        paths=paths,
        noise_paths=noise_paths,
        latency_ms=latency,
        error_rate=errors,
        verdict=verdict,
        reasons=reasons,
        write_wait_ms=_write_wait(st),
        noise_rates=list(learned.noise_rows),
        generated=list(learned.generated_rows),
        raced=st.get("raced"),
        methods=methods,
        epoch=_epoch(st.epoch, now),
        history=[_history(e, now) for e in st.history],
        state=state,
        state_changed=state != st.state,
        fallbacks={k[9:]: n for k, n in sorted(st.counters.items()) if k.startswith("fallback_") and n},
    )


def _write_wait(st: RouteStats) -> dict[str, float | None] | None:
    waits = sum(st.latency.get("prewrite", {}).values())
    if not waits:
        return None
    return {"p50": _ms(st.percentile("prewrite", 0.5)), "p99": _ms(st.percentile("prewrite", 0.99)),
            "count": float(waits)}  # fmt: skip


_SHOWN: Final = frozenset({"seen", "sampled", "compared", "dropped", "skipped"})


_KIND_TEXT: Final = {
    "connect": "connection refused or reset (connect)",
    "timeout": "no answer within the shadow timeout (timeout)",
    "protocol": "an unreadable response (protocol)",
    "error": "the call could not be made (error)",
}
_SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def _unavailable(route: Route | None, st: RouteStats, compared: int, settings: ShadowSettings) -> list[str]:
    """Why this route's comparisons are unavailable, or [] when they are not (see the module docstring)."""
    for side in ("new", "legacy"):
        prefix = f"unanswered:{side}:"
        kinds = {k[len(prefix):]: n for k, n in st.counters.items() if k.startswith(prefix) and n > 0}
        total = sum(kinds.values())
        if total >= UNANSWERED_MIN:
            kind = max(kinds, key=lambda k: kinds[k])
            return [
                f"the shadow side ({side}) did not answer: {_KIND_TEXT.get(kind, kind)}; the last {total} "
                f"shadow calls failed, so nothing is being compared; check the {side} upstream"
            ]
    reasons = []
    spec = route.shadow if route is not None else None
    flipped_writes = (
        route is not None and spec is not None and route.target == "new"
        and route.methods is not None and not (route.methods & _SAFE)
    )  # fmt: skip
    few = compared < settings.min_compared
    if flipped_writes or (few and st.get("unavailable_write")):
        reasons.append(
            "writes: the route is served by new and legacy has no dry run, so writes are not compared"
        )
    if few and st.get("unavailable_secret"):
        reasons.append(
            "writes: no dry-run secret is set (STRANGLER_DRY_RUN_SECRET), so writes are not compared; "
            "set it for the gateway and new"
        )
    if few and (st.get("unavailable_stream") or st.get("unavailable_websocket")):
        reasons.append("stream: responses are event streams / WebSockets, not compared")
    return reasons


def _verdict(
    compared: int,
    rate: float | None,
    latency: dict[str, dict[str, float | None]],
    st: RouteStats,
    settings: ShadowSettings,
    learning: int | None = None,
) -> tuple[str, list[str]]:
    """``learning``: the A/A pairs of a read method still short of MIN_AA_PAIRS (None: not learning). A read
    that differs before the noise test has its pairs is not yet judged on its match rate: races of a busy
    list differ from the first comparison on, and only the A/A pairs tell them from new's own differences."""
    if compared < settings.min_compared or rate is None:
        return NOT_ENOUGH, [f"{compared} of the {settings.min_compared} comparisons needed (min_compared)"]
    reasons = []
    if rate < settings.match_threshold:
        if learning is not None:
            return NOT_ENOUGH, [
                f"learning what is noise: {learning} of the {MIN_AA_PAIRS} A/A pairs needed "
                f"(match rate {rate:.1%} until then)"
            ]
        reasons.append(f"match rate {rate:.1%} is below {settings.match_threshold:.1%} (match_threshold)")
    # Below P99_MIN_SAMPLES a "p99" is just the slowest call, one outlier: compare medians instead.
    samples = min(sum(st.latency.get(side, {}).values()) for side in ("control", "candidate"))
    q = "p99" if samples >= P99_MIN_SAMPLES else "p50"
    legacy_q, new_q = latency["legacy"][q], latency["new"][q]
    ratio = settings.latency_ratio
    if ratio and legacy_q is not None and new_q is not None and new_q > legacy_q * ratio + P99_SLACK_S * 1000:
        reasons.append(f"new {q} {new_q:g} ms is slower than legacy {q} {legacy_q:g} ms")
    if st.get("errors_candidate") > st.get("errors_control"):
        reasons.append(
            f"new failed {st.get('errors_candidate')} times, legacy {st.get('errors_control')} times"
        )
    return (NOT_READY, reasons) if reasons else (READY, [])


def build_report(
    stats: dict[str, RouteStats],
    table: RouteTable | None,
    samples: dict[str, list[Sample]] | None = None,
    now: float | None = None,
) -> Report:
    """The report for every shadowed route in ``table`` and every route with recorded data."""
    settings = table.shadow_settings if table else ShadowSettings()
    now = time.time() if now is None else now
    # File order (routes are stored in match-priority order), then routes known only from the data.
    names = [r.name for r in sorted(table.routes, key=lambda r: r.line) if r.shadow] if table else []
    names += sorted(n for n in stats if n not in names)
    routes = []
    for name in names:
        rr = _route_report(name, stats.get(name) or RouteStats(name), table, settings, now)
        for s in (samples or {}).get(name, []):
            rr.examples.append(asdict(s))
        routes.append(rr)
    return Report(
        generated_at=now,
        source=table.source if table else None,
        min_compared=settings.min_compared,
        match_threshold=settings.match_threshold,
        routes=routes,
    )


async def gather(
    store: DiffStore, table: RouteTable | None, route: str | None = None, examples: int = 5,
    *, history: bool = False, now: float | None = None,
) -> Report:  # fmt: skip
    """Read the store and build the report of each route's current epoch (with example diffs of that
    epoch for ``route``, or for all if "*"; with every kept epoch's totals when ``history``), and keep
    the stable verdicts' states that changed."""
    stats = await store.stats(history)
    wanted = list(stats) if route == "*" else [route] if route else []
    samples = {}
    for name in wanted:
        epoch = stats[name].epoch if name in stats else None
        samples[name] = await store.samples(name, examples, epoch.id if epoch else None)
    report = build_report(stats, table, samples, now)
    for rr in report.routes:
        if rr.state_changed and rr.epoch is not None:
            await store.save_state(rr.name, rr.epoch["id"], rr.state)
    return report
