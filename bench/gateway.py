"""Gateway data-path benchmark: strangler against nginx and node http-proxy, measured in one run.

Variants, each one process in front of the same upstream (bench/upstream.py), interleaved round by round
(A B C D, A B C D, ...) so drifting load on a shared machine hits them alike:

* ``direct``            wrk -> upstream (the ceiling; CPU column is the upstream's own)
* ``nginx``             nginx, worker_processes 1, keepalive upstream pool
* ``node http-proxy``   http-proxy with a keepAlive agent (bench/node)
* ``strangler``         ``strangler proxy --workers 1``
* ``strangler+shadow``  the same with every GET shadowed to a second upstream and compared (issue 4)

Targets: strangler >= 1.5x node http-proxy and >= 0.7x nginx throughput; shadowed >= 0.6x unshadowed
throughput with primary p99 <= 1.5x. Run ``python -m bench.gateway --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/gateway.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # (bench/ would shadow `services`)

from bench import gw_targets, profile
from bench.harness import BenchError, Fleet, Variant, ensure_apt_packages, log, process_tree, rss_mib
from bench.report import RESULTS_DIR, Check, machine_state, spread, table, utc_now, write_json
from bench.wrk import Run, Summary, WrkParseError, paired_ratios, run_wrk

PATH = "/api/v1/users/1"  # a declared route in strangler's table (matching is part of the cost)
WORKER_RSS_MIB = 60.0  # issue 13: a worker's RSS not above the pure-Python data path's (57-60 MB at e8c2e0d)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per variant (default 2)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s: for development, not for figures")
    p.add_argument("--no-shadow", action="store_true", help="skip the shadowing variant")
    p.add_argument("--express-head", action="store_true",
                   help="upstreams answer with an Express app's head (7 headers, not 2)")  # fmt: skip
    p.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, sample each strangler variant with py-spy during one extra run")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 3.0, 2, 1.0
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be positive")
    return args


def measure(variants: list[Variant], args: argparse.Namespace,
            probe: gw_targets.ShadowProbe | None = None) -> dict[str, Summary]:
    """Warm every variant up, then run them interleaved for `args.rounds` rounds."""
    summaries = {v.name: Summary(v.name) for v in variants}
    for v in variants:
        log(f"warm-up {v.name}")
        run_wrk(f"http://127.0.0.1:{v.port}{PATH}", connections=args.connections, duration=args.warmup)
    time.sleep(1.0)
    if probe is not None:
        probe.begin()
    for rnd in range(args.rounds):
        for v in variants:
            try:
                run = run_wrk(f"http://127.0.0.1:{v.port}{PATH}", connections=args.connections,
                              duration=args.duration, cpu_of=v.cpu)
            except WrkParseError as exc:
                raise BenchError(f"{v.name}: {exc}") from exc
            run.round = rnd
            summaries[v.name].runs.append(run)
            cpu = run.cpu_us_per_request
            log(f"round {rnd + 1}/{args.rounds} {v.name:<18} {run.rps:8.0f} req/s  p50 {run.p50_ms:.2f} ms  "
                f"p99 {run.p99_ms:.2f} ms  cpu {'-' if cpu is None else f'{cpu:.1f}'} us/req  "
                f"errors {run.errors}")
            time.sleep(0.5)  # let queued work (shadow copies) settle before the next variant's run
    if probe is not None:
        time.sleep(1.0)
        probe.end()
    return summaries


def checks(s: dict[str, Summary], shadow_note: str) -> list[Check]:
    """The targets, as ratios of means with the per-round paired ratios as detail."""
    out: list[Check] = []
    strangler = s.get("strangler")
    rps: Callable[[Run], float] = lambda r: r.rps  # noqa: E731  (a one-line accessor)
    p99: Callable[[Run], float] = lambda r: r.p99_ms  # noqa: E731
    for anchor, bound in (("node http-proxy", 1.5), ("nginx", 0.7)):
        base = s.get(anchor)
        if strangler and base and base.rps_mean > 0 and strangler.rps_mean > 0:
            ratio = strangler.rps_mean / base.rps_mean
            detail = spread(paired_ratios(strangler, base, rps))
            out.append(Check(f"strangler / {anchor} throughput", ratio, ">=", bound, detail))
        else:
            out.append(Check(f"strangler / {anchor} throughput", None, ">=", bound, "not measured"))
    shadow = s.get("strangler+shadow")
    if strangler and shadow and strangler.rps_mean > 0:
        out.append(Check("shadowed / unshadowed throughput", shadow.rps_mean / strangler.rps_mean, ">=", 0.6,
                         spread(paired_ratios(shadow, strangler, rps))))
        out.append(Check("shadowed / unshadowed primary p99", shadow.p99_ms / strangler.p99_ms, "<=", 1.5,
                         spread(paired_ratios(shadow, strangler, p99))))
    else:
        for name, op, bound in (("shadowed / unshadowed throughput", ">=", 0.6),
                                ("shadowed / unshadowed primary p99", "<=", 1.5)):
            out.append(Check(name, None, op, bound, shadow_note or "not measured"))
    for summary in s.values():
        if summary.errors > summary.requests * 0.001:
            rate = min(1.0, summary.errors / max(summary.requests, 1))
            out.append(Check(f"{summary.name}: error rate", rate, "<=", 0.001,
                             f"{summary.errors} non-2xx or socket errors", unit="%"))
    return out


def worker_rss(variants: list[Variant]) -> dict[str, float]:
    """The RSS (MiB) of each strangler variant's worker (its process, or a supervisor's one child), read
    after its rounds; a variant whose worker has none (it died) is left out: its check says not measured."""
    out = {}
    for v in variants:
        if v.name.startswith("strangler"):
            rss = rss_mib(process_tree(v.pid)[-1])
            if rss > 0:
                out[v.name] = rss
    return out


def data_path_checks(s: dict[str, Summary], rss: dict[str, float] | None = None) -> list[Check]:
    """Issue 13's targets for the compiled data path, from the same run: throughput and CPU per request
    against nginx's, what shadowing every GET costs, p99 against nginx's and the unshadowed worker's RSS
    after its rounds (the shadowing worker's is in the detail: it holds the store's clients besides).
    Printed and kept in the JSON; ``--check`` judges only `checks` (the acceptance these raise)."""
    mine, nginx, shadow = s.get("strangler"), s.get("nginx"), s.get("strangler+shadow")
    rps: Callable[[Run], float] = lambda r: r.rps  # noqa: E731
    p99: Callable[[Run], float] = lambda r: r.p99_ms  # noqa: E731
    out: list[Check] = []
    if mine is not None and nginx is not None and mine.rps_mean > 0 and nginx.rps_mean > 0:
        out.append(Check("strangler / nginx throughput", mine.rps_mean / nginx.rps_mean, ">=", 0.8,
                         spread(paired_ratios(mine, nginx, rps))))
        out.append(Check("strangler p99 / nginx p99", mine.p99_ms / nginx.p99_ms, "<=", 1.5,
                         spread(paired_ratios(mine, nginx, p99))))
    else:
        out.append(Check("strangler / nginx throughput", None, ">=", 0.8, "not measured"))
        out.append(Check("strangler p99 / nginx p99", None, "<=", 1.5, "not measured"))
    cpu, nginx_cpu = _cpu(mine), _cpu(nginx)
    if cpu is not None and nginx_cpu is not None:
        out.append(Check("strangler CPU per request / nginx's", cpu / nginx_cpu, "<=", 1.25,
                         f"{cpu:.1f} vs {nginx_cpu:.1f} us"))
    else:
        out.append(Check("strangler CPU per request / nginx's", None, "<=", 1.25, "not measured"))
    if mine is not None and shadow is not None and mine.rps_mean > 0:
        out.append(Check("shadowed / unshadowed throughput", shadow.rps_mean / mine.rps_mean, ">=", 0.75,
                         spread(paired_ratios(shadow, mine, rps))))
    else:
        out.append(Check("shadowed / unshadowed throughput", None, ">=", 0.75, "not measured"))
    shadow_cpu = _cpu(shadow)
    if cpu is not None and shadow_cpu is not None:
        out.append(Check("CPU every shadowed GET adds", shadow_cpu - cpu, "<=", 8.0,
                         f"{shadow_cpu:.1f} vs {cpu:.1f} us", unit="us"))
    else:
        out.append(Check("CPU every shadowed GET adds", None, "<=", 8.0, "not measured", unit="us"))
    rss = rss or {}
    shadowed = rss.get("strangler+shadow")
    detail = "" if shadowed is None else f"shadowing worker {shadowed:.1f} MiB"
    out.append(Check("strangler worker RSS after its rounds", rss.get("strangler"), "<=", WORKER_RSS_MIB,
                     detail or ("" if "strangler" in rss else "not measured"), unit="MiB"))
    return out


def _cpu(summary: Summary | None) -> float | None:
    return summary.cpu_us_per_request if summary is not None else None


def profile_stranglers(variants: list[Variant], args: argparse.Namespace) -> dict[str, str]:
    """One extra wrk run per strangler variant with py-spy attached; the folded summary per variant."""
    out: dict[str, str] = {}
    RESULTS_DIR.mkdir(exist_ok=True)
    for v in variants:
        if not v.name.startswith("strangler"):
            continue
        stacks = RESULTS_DIR / f"profile-{v.name.replace('+', '-')}-{time.strftime('%Y%m%dT%H%M%SZ')}.txt"
        try:
            spy = profile.start_recording(v.pid, args.duration, stacks)
        except FileNotFoundError as exc:
            return {"all": str(exc)}
        log(f"profiling {v.name} with py-spy for {args.duration:.0f} s")
        try:
            run_wrk(f"http://127.0.0.1:{v.port}{PATH}", connections=args.connections, duration=args.duration)
        finally:
            _, err = spy.communicate(timeout=args.duration + 30)
        if spy.returncode != 0 or not stacks.exists():
            out[v.name] = f"  py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}"
        else:
            out[v.name] = f"  stacks: {stacks}\n{profile.summarise(stacks)}"
    return out


def cpu_notes(s: dict[str, Summary]) -> list[str]:
    """CPU per request of strangler relative to each anchor: steadier than throughput on a busy machine."""
    mine = s.get("strangler")
    out = []
    for anchor in ("nginx", "node http-proxy"):
        base = s.get(anchor)
        if mine and base and mine.cpu_us_per_request and base.cpu_us_per_request:
            out.append(f"cpu: strangler spends {mine.cpu_us_per_request / base.cpu_us_per_request:.2f}x "
                       f"the CPU per request of {anchor} ({mine.cpu_us_per_request:.1f} vs "
                       f"{base.cpu_us_per_request:.1f} us)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report; write the JSON file."""
    args = parse_args(argv)
    ensure_apt_packages({"wrk": "wrk", "nginx": "nginx-light"})
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    started, load_before = utc_now(), machine_state()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as tmp, contextlib.ExitStack() as stack:
        fleet = Fleet(Path(tmp))
        try:  # the fleet stops before `stack` drops the shadow storage it may still be writing to
            variants, shadow_probe = gw_targets.start_all(fleet, Path(tmp), args, wanted, notes, stack)
            summaries = measure(variants, args, shadow_probe)
            rss = worker_rss(variants)
            if shadow_probe is not None:
                notes.extend(shadow_probe.notes(summaries[shadow_probe.name].requests))
            profiles = profile_stranglers(variants, args) if args.profile else {}
        finally:
            fleet.close()
    ordered = [summaries[v.name] for v in variants]
    notes.extend(cpu_notes(summaries))
    results = checks(summaries, next((n for n in notes if n.startswith("shadow")), ""))
    compiled = data_path_checks(summaries, rss)
    print(f"\nGateway benchmark, {started}: {args.rounds} rounds x {args.duration:.0f} s, wrk -t1 "
          f"-c{args.connections}, GET {PATH} (70-byte JSON{', Express head' if args.express_head else ''}); "
          "p50/p99 are medians over rounds;\n"
          f"CPU is the measured process's user+system time per request (for `direct`, the upstream's).")
    print(table(ordered))
    print("\nTargets (ratio of means; per-round paired ratios in the detail):")
    for c in results:
        print(c.line())
    print("\nCompiled data path targets (issue 13; not judged by --check):")
    for c in compiled:
        print(c.line())
    for note in notes:
        print(f"  note: {note}")
    for name, text in profiles.items():
        print(f"\nWhere {name}'s time goes (py-spy, one extra unmeasured run):\n{text}")
    payload: dict[str, Any] = {
        "benchmark": "gateway", "started": started, "finished": utc_now(), "path": PATH,
        "settings": {k: getattr(args, k) for k in ("duration", "rounds", "connections", "warmup", "quick")},
        "machine_before": load_before, "machine_after": machine_state(),
        "variants": [s.to_json() for s in ordered], "checks": [c.to_json() for c in results],
        "data_path_checks": [c.to_json() for c in compiled], "notes": notes,
        "profiles": profiles,
    }
    print(f"\nJSON: {write_json('gateway', payload)}")
    return 1 if args.check and any(c.verdict == "FAIL" for c in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/gateway.py: {exc}", file=sys.stderr)
        sys.exit(2)
