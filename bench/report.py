"""Printing and saving benchmark results: the summary table, target checks, the JSON file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.wrk import Summary

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Check:
    """One target: `value` compared with `bound` (`>=` or `<=`); SKIP when the value could not be measured."""

    name: str
    value: float | None
    op: str
    bound: float
    detail: str = ""
    unit: str = "x"  # "x": a ratio; "%": a fraction shown as a percentage; "us": microseconds; "MiB"

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "SKIP"
        ok = self.value >= self.bound if self.op == ">=" else self.value <= self.bound
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        value = "   n/a" if self.value is None else self._fmt(self.value)
        target = f"target {self.op} {self._fmt(self.bound).strip()}"
        return f"  {self.name:<44} {value}  {target}  {self.verdict:<4}  {self.detail}"

    def _fmt(self, v: float) -> str:
        if self.unit in ("us", "MiB"):
            return f"{v:.1f} {self.unit}".rjust(7)  # as wide as a ratio
        return f"{v:6.2%}" if self.unit == "%" else f"{v:6.2f}x"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": None if self.value is None else round(self.value, 3),
                "op": self.op, "bound": self.bound, "verdict": self.verdict, "detail": self.detail}


def table(summaries: Iterable[Summary]) -> str:
    """A fixed-width table: req/s mean [min-max], p50, p99 (medians over rounds), CPU per request, errors."""
    lines = [f"  {'variant':<20} {'req/s mean':>10} {'[min - max]':>17} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'CPU us/req':>11} {'(sys)':>7} {'errors':>7}"]
    for s in summaries:
        lines.append(
            f"  {s.name:<20} {s.rps_mean:>10.0f} [{s.rps_min:>7.0f} -{s.rps_max:>7.0f}] {s.p50_ms:>8.2f} "
            f"{s.p99_ms:>8.2f} {_us(s.cpu_us_per_request):>11} {_us(s.sys_us_per_request):>7} {s.errors:>7}")
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def spread(values: list[float]) -> str:
    """`per round a-b` for paired ratios, or an empty string."""
    return f"per round {min(values):.2f}-{max(values):.2f}" if values else ""


def machine_state() -> dict[str, Any]:
    """What else the machine was doing: cores and load average (the machine may be shared)."""
    return {"cores": os.cpu_count(), "loadavg": os.getloadavg()}


def write_json(kind: str, payload: dict[str, Any]) -> Path:
    """Write `payload` to bench/results/<kind>-<UTC timestamp>.json and return the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def utc_now() -> str:
    """Now, ISO 8601 UTC to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
