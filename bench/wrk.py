"""Run wrk, parse its report, and summarise interleaved rounds.

One `Run` is one wrk invocation against one variant (plus the variant's CPU time over it); a `Summary`
folds a variant's runs: throughput as mean and min-max over rounds, latency percentiles as the median of
the per-round values (robust to one round disturbed by other work on a shared machine).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).resolve().parent / "lua"

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


class WrkParseError(ValueError):
    """wrk printed something that is not a complete report (it failed, or the target refused)."""


@dataclass
class Run:
    """One wrk run: throughput, latency (ms), errors, and the measured process's CPU over the run."""

    rps: float
    requests: int
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non2xx: int = 0
    socket_errors: int = 0
    cpu_s: float | None = None  # user + system
    sys_s: float | None = None  # system (kernel) part of cpu_s
    round: int = 0

    @property
    def errors(self) -> int:
        """Responses that were not 2xx/3xx plus socket errors (connect, read, write, timeout)."""
        return self.non2xx + self.socket_errors

    @property
    def cpu_us_per_request(self) -> float | None:
        """The measured process's CPU time per request served, microseconds."""
        if self.cpu_s is None or self.requests == 0:
            return None
        return self.cpu_s / self.requests * 1e6


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise WrkParseError(f"unreadable latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> Run:
    """Parse the stdout of `wrk --latency`; raise WrkParseError if a field is missing."""

    def grab(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise WrkParseError(f"no match for {pattern!r} in wrk output:\n{output[-1500:]}")
        return match.group(1)

    socket_errors = 0
    if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)):
        socket_errors = sum(int(g) for g in m.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Run(
        rps=float(grab(r"^Requests/sec:\s+([\d.]+)")),
        requests=int(grab(r"^\s*(\d+) requests in ")),
        p50_ms=_to_ms(grab(r"^\s+50(?:\.000)?%\s+(\S+)")),
        p75_ms=_to_ms(grab(r"^\s+75(?:\.000)?%\s+(\S+)")),
        p90_ms=_to_ms(grab(r"^\s+90(?:\.000)?%\s+(\S+)")),
        p99_ms=_to_ms(grab(r"^\s+99(?:\.000)?%\s+(\S+)")),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=socket_errors,
    )


def wrk_command(url: str, *, connections: int, duration: float, script: str | None = None,
                script_args: Sequence[str] = (), threads: int = 1, headers: Sequence[str] = ()) -> list[str]:
    """The wrk command line: one thread (the machine is small), `--latency`, optional Lua script and
    extra request headers (``"Name: value"``; a script's ``wrk.format`` sends them too)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
           "--timeout", "10s"]
    for header in headers:
        cmd += ["-H", header]
    if script is not None:
        cmd += ["-s", str(LUA_DIR / script)]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    return cmd


def run_wrk(url: str, *, connections: int, duration: float, script: str | None = None,
            script_args: Sequence[str] = (), cpu_of: Callable[[], tuple[float, float]] | None = None,
            headers: Sequence[str] = ()) -> Run:
    """Run wrk once; `cpu_of` ((user, system) seconds) is read before and after to charge CPU to the run."""
    cmd = wrk_command(url, connections=connections, duration=duration, script=script, script_args=script_args,
                      headers=headers)
    before = cpu_of() if cpu_of else (0.0, 0.0)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    after = cpu_of() if cpu_of else (0.0, 0.0)
    if done.returncode != 0:
        raise WrkParseError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    run = parse_wrk(done.stdout)
    if cpu_of is not None:
        run.cpu_s = sum(after) - sum(before)
        run.sys_s = after[1] - before[1]
    return run


@dataclass
class Summary:
    """A variant's runs folded: mean/min/max throughput, median percentiles, CPU per request."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rps_mean(self) -> float:
        return statistics.fmean(r.rps for r in self.runs) if self.runs else 0.0

    @property
    def rps_min(self) -> float:
        return min((r.rps for r in self.runs), default=0.0)

    @property
    def rps_max(self) -> float:
        return max((r.rps for r in self.runs), default=0.0)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs) if self.runs else 0.0

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs) if self.runs else 0.0

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def cpu_us_per_request(self) -> float | None:
        """Total CPU over total requests across rounds (None when CPU was not measured)."""
        if not self.runs or any(r.cpu_s is None for r in self.runs) or self.requests == 0:
            return None
        return sum(r.cpu_s or 0.0 for r in self.runs) / self.requests * 1e6

    @property
    def sys_us_per_request(self) -> float | None:
        """The kernel's share of `cpu_us_per_request` (syscalls: socket reads and writes, epoll)."""
        if not self.runs or any(r.sys_s is None for r in self.runs) or self.requests == 0:
            return None
        return sum(r.sys_s or 0.0 for r in self.runs) / self.requests * 1e6

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form: the folded figures and every run."""
        return {
            "name": self.name, "rps_mean": round(self.rps_mean, 1), "rps_min": round(self.rps_min, 1),
            "rps_max": round(self.rps_max, 1), "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "cpu_us_per_request": _round(self.cpu_us_per_request),
            "sys_us_per_request": _round(self.sys_us_per_request), "requests": self.requests,
            "errors": self.errors, "runs": [asdict(r) for r in self.runs],
        }


def paired_ratios(a: Summary, b: Summary, metric: Callable[[Run], float]) -> list[float]:
    """metric(a)/metric(b) for the runs of the same round (interleaving makes each pair comparable)."""
    by_round = {r.round: r for r in b.runs}
    return [metric(r) / metric(by_round[r.round]) for r in a.runs
            if r.round in by_round and metric(by_round[r.round]) > 0]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
