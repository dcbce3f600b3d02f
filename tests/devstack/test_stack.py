"""`strangler run`: the whole system as a real subprocess (its parts are in test_stack_parts.py).

The end-to-end tests start `strangler run` exactly as `make run` does, with free ports and no
DATABASE_URL / REDIS_URL (so the embedded PostgreSQL and Redis are used), talk to it through the gateway,
then stop it with a signal and check that nothing it started is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.waiting import eventually_sync

from proxy.devstack.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
STRANGLER = Path(sys.executable).parent / "strangler"


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (by parent pid, so also those in their own sessions)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Run:
    """A `strangler run` subprocess and everything it has printed so far."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    ports: dict[str, int]
    output: bytearray = field(default_factory=bytearray)
    routes: Path = ROOT / "routes.yaml"

    def read(self, seconds: float) -> None:
        """Collect output for up to `seconds` (the pipe must be drained or the stack would block)."""
        assert self.proc.stdout is not None
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_up(self, timeout: float) -> None:
        def up() -> bool:
            self.read(0.2)  # returns as soon as output arrives
            if b"strangler is up" in self.output:
                return True
            assert self.proc.poll() is None, f"strangler run exited {self.proc.returncode}:\n{self.text}"
            return False

        eventually_sync(up, what="'strangler is up'", within=timeout, last=lambda: self.text[-5000:])

    def wait_exit(self, timeout: float) -> None:
        """Until the process exits, collecting its output (fails after ``timeout`` seconds)."""

        def exited() -> bool:
            self.read(0.2)
            return self.proc.poll() is not None

        eventually_sync(exited, what="strangler run to exit", within=timeout, last=lambda: self.text)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}{path}"

    def stop(self, sig: int, timeout: float) -> int:
        self.proc.send_signal(sig)
        with contextlib.suppress(AssertionError):
            self.wait_exit(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            name = signal.Signals(sig).name
            raise AssertionError(f"strangler run ignored {name} for {timeout}s:\n{self.text}")
        self.read(0.5)
        return self.proc.returncode


@pytest.fixture(scope="module")
def stack_state() -> Iterator[Path]:
    """One state directory for the module, so the embedded PostgreSQL is initialised once.

    Not under pytest's basetemp: as root, PostgreSQL runs as another user that must traverse the path,
    and any pytest session starting meanwhile resets /tmp/pytest-of-<user> to mode 0700.
    """
    path = Path(tempfile.mkdtemp(prefix="strangler-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_run(state_dir: Path, extra_env: dict[str, str], routes: Path = ROOT / "routes.yaml") -> Run:
    """Start `strangler run` on free ports; DATABASE_URL / REDIS_URL only if `extra_env` gives them."""
    ports = {name: free_port() for name in ("gateway", "admin", "legacy", "new")}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET")}
    argv = [str(STRANGLER), "run", "--listen", f"127.0.0.1:{ports['gateway']}",
            "--admin", f"127.0.0.1:{ports['admin']}", "--legacy-port", str(ports["legacy"]),
            "--new-port", str(ports["new"]), "--state-dir", str(state_dir), "--stop-timeout", "10",
            "--routes", str(routes)]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**env, **extra_env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Run(proc, state_dir, ports)


def cleanup(r: Run) -> None:
    """Kill a run a test left up, with everything below it, and close its pipe."""
    if r.proc.poll() is None:
        leftovers = descendants(r.proc.pid)
        r.proc.kill()
        r.proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if r.proc.stdout is not None:
        r.proc.stdout.close()


@pytest.fixture
def run(stack_state: Path) -> Iterator[Run]:
    """`strangler run` with embedded databases; killed with its tree if a test leaves it up."""
    routes = stack_state / f"routes-{uuid.uuid4().hex[:6]}.yaml"  # a copy the test may edit
    routes.write_text((ROOT / "routes.yaml").read_text())
    r = start_run(stack_state, {}, routes)
    r.routes = routes
    try:
        yield r
    finally:
        cleanup(r)


def postmaster_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def served_by(run: Run, request_id: str) -> str | None:
    """Which backend served `request_id`: the gateway's access line names its target, and that backend
    must have logged the request too (a sampled shadow copy may also reach the other one)."""
    names: dict[str, list[str]] = {}
    for line in run.text.splitlines():
        if request_id in line and "|" in line:
            name, _, rest = line.partition("|")
            names.setdefault(name.strip(), []).append(rest)
    access = [json.loads(rest) for rest in names.get("gateway", []) if '"strangler.access"' in rest]
    targets = {entry["target"] for entry in access}
    if len(targets) != 1:
        return None
    target = targets.pop()
    return target if target in names else None


def test_run_serves_both_backends_through_the_gateway_and_stops_on_sigint(run: Run) -> None:
    """A `new` route reaches Python, the rest legacy; editing routes flips one; SIGINT stops all, exit 0."""
    run.wait_up(45)
    for part in ("gateway", "admin", "legacy", "new"):
        assert f"127.0.0.1:{run.ports[part]}" in run.text, part
    children = descendants(run.proc.pid)
    pg = postmaster_pid(run.state_dir)
    assert pg is not None and alive(pg)
    with httpx.Client(timeout=10) as http:
        # POST /api/v1/auth/register is not declared in routes.yaml: the default route, legacy.
        legacy_id = f"stack-{uuid.uuid4()}"
        email = f"stack-{uuid.uuid4().hex[:8]}@example.com"
        r = http.post(run.url("/api/v1/auth/register"), headers={"X-Request-Id": legacy_id},
                      json={"email": email, "password": "password123", "name": "Stack"})
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == legacy_id
        user = r.json()["user"]
        # GET /api/v1/users/{id} is `target: new` in routes.yaml.
        new_id = f"stack-{uuid.uuid4()}"
        r = http.get(run.url(f"/api/v1/users/{user['id']}"), headers={"X-Request-Id": new_id})
        assert r.status_code == 200 and r.headers["x-request-id"] == new_id
        assert r.json() == user
        # Each service logs the request id it served, and strangler run prefixes every line with its name.
        def served(request_id: str) -> str | None:
            run.read(0.1)  # collect what has been printed so far (returns early on no output)
            return served_by(run, request_id)

        tail = lambda: run.text[-3000:]  # noqa: E731  # the output so far, when a wait fails
        assert eventually_sync(lambda: served(legacy_id), what="the legacy id's lines", last=tail) == "legacy"
        assert eventually_sync(lambda: served(new_id), what="the new id's lines", last=tail) == "new"

        # Editing the user's routes file flips the route: the generated copy follows, the gateway reloads.
        text = run.routes.read_text()
        flipped = text.replace('path: "/api/v1/users/{id}"}\n    target: new', 'path: "/api/v1/users/{id}"}\n'
                               '    target: legacy')
        assert flipped != text
        run.routes.write_text(flipped)

        def served_by_legacy() -> bool:
            rid = f"flip-{uuid.uuid4()}"
            r = http.get(run.url(f"/api/v1/users/{user['id']}"), headers={"X-Request-Id": rid})
            assert r.json() == user
            run.read(0.5)
            return served_by(run, rid) == "legacy"

        eventually_sync(served_by_legacy, what="the flip to legacy", within=15, last=lambda: run.text[-3000:])

    # stop() fails the test if the stack ignores SIGINT for 40 s: a hang guard, not a speed check.
    assert run.stop(signal.SIGINT, 40) == 0, run.text[-4000:]
    assert run.text.rstrip().endswith("stopped"), run.text[-2000:]
    assert not [pid for pid in children if alive(pid)], "children left running"
    assert not alive(pg), "embedded postgres left running"


def test_run_exits_non_zero_naming_a_child_that_dies(run: Run) -> None:
    """When legacy dies on its own the rest are stopped and strangler run exits 1 naming it."""
    run.wait_up(45)
    children = descendants(run.proc.pid)
    legacy = [pid for pid in children if b"legacy/src/server.js" in cmdline(pid)]
    assert len(legacy) == 1, [cmdline(pid) for pid in children]
    os.kill(legacy[0], signal.SIGKILL)
    run.wait_exit(40)
    run.read(0.5)
    assert run.proc.returncode == 1, run.text[-3000:]
    assert "legacy exited with status -9 on its own; stopping the rest" in run.text
    assert not [pid for pid in children if alive(pid)]


def run_to_end(argv: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run a `strangler run` expected to exit by itself; if it does not, stop it cleanly, then fail."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # it started things: let it stop them (embedded PostgreSQL too)
        _, err = proc.communicate(timeout=60)
        raise AssertionError(f"strangler run did not exit by itself:\n{err.decode()}") from None
    return proc.returncode, err.decode()


def test_run_refuses_a_busy_port_naming_the_flag(stack_state: Path) -> None:
    """If a port is taken, strangler run exits 1 at once and says which flag moves it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [str(STRANGLER), "run", "--new-port", str(port), "--listen", f"127.0.0.1:{free_port()}",
                "--admin", f"127.0.0.1:{free_port()}", "--legacy-port", str(free_port()),
                "--state-dir", str(stack_state)]
        code, err = run_to_end(argv)
    assert code == 1, err
    assert f"new cannot listen on 127.0.0.1:{port}" in err and "--new-port" in err


def test_run_uses_given_databases_migrates_them_and_stops_on_sigterm(
        make_database: object, redis_url: str, tmp_path: Path) -> None:
    """With DATABASE_URL / REDIS_URL set nothing embedded starts, migrations are applied, SIGTERM exits 0."""
    database_url = make_database(migrated=False)  # type: ignore[operator]
    r = start_run(tmp_path, {"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    try:
        r.wait_up(45)
        assert f"{redis_url}" in r.text and "REDIS_URL" in r.text and "DATABASE_URL" in r.text
        assert not (tmp_path / "pg").exists() and not (tmp_path / "redis").exists()
        with httpx.Client(timeout=10) as http:  # the schema is there: a read through the gateway works
            resp = http.get(r.url("/api/v1/posts?limit=1"))
            assert resp.status_code == 200, resp.text
        children = descendants(r.proc.pid)
        assert r.stop(signal.SIGTERM, 40) == 0, r.text[-3000:]
        assert "SIGTERM: stopping" in r.text
        assert not [pid for pid in children if alive(pid)]
    finally:
        cleanup(r)


def test_run_refuses_a_broken_routes_file_before_starting_anything(tmp_path: Path) -> None:
    """A routes file with errors stops strangler run at once with the file's own error lines."""
    routes = tmp_path / "routes.yaml"
    text = (ROOT / "routes.yaml").read_text()
    assert "\n    target: new\n" in text
    routes.write_text(text.replace("\n    target: new\n", "\n    target: nowhere\n", 1))
    argv = [str(STRANGLER), "run", "--routes", str(routes), "--state-dir", str(tmp_path / "state"),
            "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
            "--legacy-port", str(free_port()), "--new-port", str(free_port())]
    code, err = run_to_end(argv)
    assert code == 1, err
    assert "the routes file has errors" in err and f"{routes}:" in err and "nowhere" in err, err
    assert not (tmp_path / "state").exists()  # no database was started
