"""Where a Python server's time goes under load: py-spy samples, folded into self and inclusive shares.

Used by `bench/gateway.py --profile` after the measured rounds, on an extra unmeasured run, so sampling
never disturbs the figures. py-spy is not a project dependency: `.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    """The py-spy executable (next to this interpreter, or on PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample `pid` for `seconds` into `out` (collapsed stacks) without pausing it; return py-spy."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate),
           "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise(collapsed: Path, top: int = 12) -> str:
    """The functions with the most samples on-CPU: by self time and inclusive of callees."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if total == 0:
        return "  (no samples: the process was idle or py-spy could not read it)"
    lines = [f"  {total} samples; self time (the frame itself, including the C calls it makes, e.g. "
             "transport.write -> send):"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive time (the frame and everything it calls), entry points omitted:")
    entry = {frame for frame, n in inclusive.items() if n >= 0.95 * total}
    shown = [(f, n) for f, n in inclusive.most_common() if f not in entry][:top]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in shown]
    return "\n".join(lines)
