"""Process plumbing shared by the benchmarks: tools, children, ports, CPU time.

Every process a benchmark starts goes through a `Fleet`, which starts it in a session of its own (so the
whole process group, e.g. nginx's master and worker, can be signalled by the id we were given) and stops
all of them in `close()`, which the benchmarks call from a `finally`. A `Fleet` made in the main thread
turns SIGTERM into `SystemExit` (when nothing else handles it), so that a benchmark stopped by its id runs
those `finally` blocks too instead of leaving its upstreams, proxies and gateways running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not run (missing tool, a child that did not start); the message says what to do."""


def log(message: str) -> None:
    """Progress line on stderr, so stdout stays the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verdict(wrong: list[str], check: bool) -> int:
    """Print what went wrong; with ``check``, PASS or FAIL and the exit status (1 on any failure)."""
    for line in wrong:
        print(f"FAIL: {line}")
    if not check:
        return 0
    print("PASS" if not wrong else "FAIL")
    return 1 if wrong else 0


def ensure_apt_packages(binaries: Mapping[str, str]) -> None:
    """Install the Debian packages whose binaries are missing (`{binary: package}`), one `apt-get update`."""
    missing = sorted({pkg for binary, pkg in binaries.items() if find_binary(binary) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(f"missing {', '.join(missing)}: install them (sudo apt-get install -y "
                         f"{' '.join(missing)}) and run the benchmark again")
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")


def find_binary(name: str) -> str | None:
    """`which`, also looking in /usr/sbin (nginx lives there and root's PATH may lack it)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_npm_ci(directory: Path) -> None:
    """Run `npm ci` in `directory` unless node_modules is newer than package-lock.json."""
    stamp = directory / "node_modules" / ".bench-installed"
    lock = directory / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    log(f"npm ci in {directory.relative_to(ROOT)}")
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=directory,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"npm ci in {directory} failed:\n{done.stderr[-2000:]}")
    stamp.touch()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, log_path: Path,
                  timeout: float = 30.0) -> None:
    """Wait until something accepts on 127.0.0.1:`port`; fail with the child's log if it died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} before listening on {port}; "
                             f"its log ends with:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{name} did not listen on port {port} within {timeout:.0f}s; log:\n{tail(log_path)}")


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file (or a note that there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _exit_on_term() -> bool:
    """Make SIGTERM raise `SystemExit` in the main thread (the default ends the process without running a
    `finally`); True when this call installed it. A handler someone else installed stays."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return False
    signal.signal(signal.SIGTERM, _term)
    return True


def _term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Fleet:
    """The children of one benchmark run; `close()` stops every one of them (TERM, then KILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._term_installed = _exit_on_term()  # undone by close()

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, port: int | None = None, timeout: float = 30.0) -> int:
        """Start `cmd` (logging to workdir/name.log), wait for `port` if given, return its pid."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(env) if env is not None else None, cwd=cwd or ROOT,
                                    start_new_session=True)
        self.procs.append((name, proc))
        if port is not None:
            wait_for_port(port, proc, name, log_path, timeout)
        return proc.pid

    def stop(self, pid: int, grace: float = 5.0) -> None:
        """Stop one child (its whole process group) and forget it."""
        for entry in list(self.procs):
            if entry[1].pid == pid:
                self.procs.remove(entry)
                _stop_group(entry[1], grace)

    def alive(self, pid: int) -> bool:
        """Whether the child `pid` is still running."""
        return any(p.pid == pid and p.poll() is None for _, p in self.procs)

    def close(self) -> None:
        """Stop every child, newest first; SIGTERM's default action again if this fleet changed it."""
        while self.procs:
            _name, proc = self.procs.pop()
            _stop_group(proc, 5.0)
        if self._term_installed and signal.getsignal(signal.SIGTERM) is _term:
            self._term_installed = False
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    # The child leads its own session, so its pid is its process-group id: this reaches its workers
    # (nginx, a multi-process gateway) and nothing else.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
            # The leader is gone; give the rest of its group the same signal so no worker lingers.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` and its descendants (processes that are gone count 0)."""
    user = system = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime and stime: fields 14 and 15 of /proc/<pid>/stat
        system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants, MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


@dataclass
class Variant:
    """One thing to load: where it listens and whose CPU time to charge."""

    name: str
    port: int
    pid: int

    def cpu(self) -> tuple[float, float]:
        return cpu_times(self.pid)
