"""`--workers N`: a supervising parent and N worker processes sharing one listening socket.

The parent binds the ports, validates the routes file, serves the admin port and watches the file. It
starts each worker as a fresh interpreter (no fork of a running event loop) that inherits the listening
socket, and restarts a worker that dies unexpectedly. A valid reload is written to a private snapshot
file and the workers are sent SIGHUP, so every worker loads exactly the bytes the parent validated; an
invalid file never reaches them. SIGTERM is forwarded: the parent turns /readyz to 503, closes its copy
of the socket, and waits for every worker to drain and exit.

Metrics add up across workers: each worker writes its request stats into the private directory about
once a second, and prometheus_client runs in multiprocess mode there (see proxy/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from proxy import compiled
from proxy.ops.admin import AdminState, create_admin_app
from proxy.ops.logs import event, setup_logging
from proxy.ops.metrics import (
    RequestStats,
    enable_multiprocess,
    merge_data_path,
    multiprocess_registry,
    read_snapshots,
)
from proxy.ops.reload import log_routes_errors
from proxy.ops.serve import (
    Stopper,
    apply_table,
    build_gateway,
    install_signals,
    open_autopilot,
    open_shadow,
    serve_data,
    sock_address,
)
from proxy.ops.settings import Settings
from proxy.routing.table import RoutesError, RouteTable, parse_routes

WORKER_ENV = "STRANGLER_INTERNAL_WORKER"
SNAPSHOT = "routes.snapshot"
FLUSH_SECONDS = 1.0
STARTUP_SECONDS = 60.0


def _write_snapshot(directory: Path, raw: bytes) -> None:
    tmp = directory / (SNAPSHOT + ".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, directory / SNAPSHOT)


def _read_snapshot(directory: Path, filename: str) -> RouteTable:
    # Parsed under the real file name, so tables and errors point at routes.yaml, not the copy.
    return parse_routes((directory / SNAPSHOT).read_bytes().decode("utf-8"), filename)


class Workers:
    """Start, watch, restart, signal and await the worker processes.

    A worker says ``ready <sha256>`` on its stdout once it accepts connections. Only ready workers get
    SIGHUP; a worker that became ready on an older snapshot than the live one is sent SIGHUP at once, so
    a reload during a worker's start-up is never missed.
    """

    def __init__(self, settings: Settings, listen: socket.socket, directory: Path, state: AdminState) -> None:
        self.settings = settings
        self.listen = listen
        self.directory = directory
        self.state = state
        self.stopping = False
        self.booted = False
        self.ready: dict[int, asyncio.subprocess.Process] = {}
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.all_ready = asyncio.Event()
        self.boot_failed = asyncio.Event()
        self._tasks: list[asyncio.Task[int]] = []

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        conf = {
            "settings": self.settings.to_json(),
            "fd": self.listen.fileno(),
            "dir": str(self.directory),
            "parent": os.getpid(),
        }
        env = dict(os.environ, **{WORKER_ENV: json.dumps(conf)})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from proxy.ops.supervisor import worker_main; worker_main()",
            pass_fds=(self.listen.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self.procs[index] = proc
        event("worker started", worker=index, worker_pid=proc.pid)
        return proc

    def _became_ready(self, index: int, proc: asyncio.subprocess.Process, line: bytes) -> None:
        self.ready[index] = proc
        self.state.workers_alive = len(self.ready)
        sha = line.split()[1].decode() if len(line.split()) > 1 else ""
        if sha != self.state.table.sha256:  # a reload landed while it was starting
            proc.send_signal(signal.SIGHUP)
        if len(self.ready) == self.settings.workers:
            self.booted = True
            self.all_ready.set()

    async def _keep(self, index: int) -> int:
        """Run worker ``index``; restart it while the gateway is not stopping (backoff if it crash-loops)."""
        backoff = 0.2
        while True:
            proc = await self._spawn(index)
            started = time.monotonic()
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line.startswith(b"ready"):
                self._became_ready(index, proc, line)
            code = await proc.wait()
            self.procs.pop(index, None)
            self.ready.pop(index, None)
            self.state.workers_alive = len(self.ready)
            # A SIGTERM that arrives before the worker installed its handlers ends it by the signal: it was
            # not serving anything, so that is a clean stop too.
            clean = code in (0, -signal.SIGTERM)
            if self.stopping:
                event("worker exited", worker=index, worker_pid=proc.pid, code=0 if clean else code)
                return 0 if clean else code
            if not self.booted:
                event("worker failed to start", logging.ERROR, worker=index, worker_pid=proc.pid, code=code)
                self.boot_failed.set()
                return code or 1
            event("worker died; restarting", logging.ERROR, worker=index, worker_pid=proc.pid, code=code)
            backoff = 0.2 if time.monotonic() - started > 10 else min(backoff * 2, 5.0)
            await asyncio.sleep(backoff)

    def start(self) -> None:
        """Start every worker (each kept alive by its own task)."""
        for index in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._keep(index), name=f"worker-{index}"))

    async def wait_booted(self, deadline: float, stop: asyncio.Event) -> bool:
        """Wait until every worker is ready (True), or one failed to start, ``stop`` fired or ``deadline``
        passed (False)."""
        waits = [asyncio.create_task(e.wait()) for e in (self.all_ready, self.boot_failed, stop)]
        await asyncio.wait(waits, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return self.all_ready.is_set() and not self.boot_failed.is_set()

    def signal(self, signum: int, only_ready: bool = False) -> None:
        """Send ``signum`` to every live (or every ready) worker."""
        for proc in list((self.ready if only_ready else self.procs).values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    async def stop(self, deadline: float) -> bool:
        """SIGTERM every worker and wait ``deadline`` seconds; SIGKILL stragglers. True if all exited 0."""
        self.stopping = True
        self.signal(signal.SIGTERM)
        done, pending = await asyncio.wait(self._tasks, timeout=deadline)
        if pending:
            event("workers did not drain in time; killing them", logging.ERROR, left=len(pending))
            self.signal(signal.SIGKILL)
            await asyncio.wait(pending, timeout=5)
            return False
        return all(task.result() == 0 for task in done)


async def supervise(settings: Settings, table: RouteTable, raw: bytes, listen: socket.socket,
                    admin: socket.socket) -> int:  # fmt: skip
    """The parent of ``--workers N``: admin port, reloads, worker lifecycle, forwarded signals."""
    from proxy.ops.reload import Reloader

    directory = Path(tempfile.mkdtemp(prefix="strangler-gateway-"))
    try:
        enable_multiprocess(directory)
        _write_snapshot(directory, raw)
        state = AdminState(table, settings.routes, multiprocess_registry(directory), settings.health_timeout,
                           token=settings.admin_token,
                           data_path=lambda: merge_data_path(read_snapshots(directory)))
        state.workers = settings.workers
        state.workers_alive = 0  # counted as each worker reports ready
        workers = Workers(settings, listen, directory, state)

        def apply(_table: RouteTable, new_raw: bytes) -> None:
            _write_snapshot(directory, new_raw)
            workers.signal(signal.SIGHUP, only_ready=True)

        reloader = Reloader(settings.routes, state, apply, raw)
        stopper = Stopper(asyncio.Event())
        install_signals(stopper, lambda: reloader.reload("SIGHUP"))
        runner = web.AppRunner(create_admin_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, admin).start()
        workers.start()
        watcher = asyncio.create_task(reloader.watch(settings.reload_interval), name="routes-watcher")
        failed_start = False
        try:
            if await workers.wait_booted(STARTUP_SECONDS, stopper.event):
                event(
                    "listening",
                    listen=sock_address(listen),
                    admin=sock_address(admin),
                    workers=settings.workers,
                    routes=settings.routes,
                    sha256=table.sha256,
                    compiled_data_path=compiled.BUILD.describe(),  # the workers decide alike (same files)
                )
                await stopper.event.wait()
            elif not stopper.event.is_set():
                failed_start = True
                event("start failed: a worker did not start; see its log lines above", logging.ERROR)
                print("strangler proxy: a worker process did not start; see the log above.", file=sys.stderr)
            state.draining = True
            event("draining", signal=stopper.signal_name, drain_timeout=settings.drain_timeout)
            listen.close()  # our copy: once the workers close theirs, new connections are refused
            clean = await workers.stop(settings.drain_timeout + 5)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await runner.cleanup()
        event("stopped", clean=clean)
        return 1 if failed_start or not clean else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _worker(settings: Settings, listen: socket.socket, directory: Path, parent: int) -> int:
    """One worker: serve the inherited socket, reload on SIGHUP from the snapshot, flush stats, drain."""
    stats = RequestStats()
    table = _read_snapshot(directory, settings.routes)
    stopper = Stopper(asyncio.Event())
    async with contextlib.AsyncExitStack() as stack:
        shadow = await stack.enter_async_context(open_shadow(table))
        gateway = build_gateway(settings, table, stats, shadow)
        # Every worker runs the autopilot: each applies the stages, one of them (the lease's) decides.
        await stack.enter_async_context(open_autopilot(gateway, stats))

        def on_hup() -> None:
            try:
                new = _read_snapshot(directory, settings.routes)
            except RoutesError as exc:  # the parent validated it: only a bug or a race gets here
                log_routes_errors(exc, "worker could not load the validated routes snapshot")
                return
            except OSError as exc:
                event("worker could not read the routes snapshot", logging.ERROR, error=str(exc))
                return
            apply_table(gateway, new)
            event("worker routes reloaded", sha256=new.sha256)

        install_signals(stopper, on_hup)

        async def flush() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                stats.write_snapshot(directory)
                if os.getppid() != parent:  # orphaned: the supervisor is gone, so drain and go
                    stopper.stop("parent exited")

        flusher = asyncio.create_task(flush(), name="metrics-flush")

        def ready() -> None:
            sys.stdout.write(f"ready {gateway.table.sha256}\n")
            sys.stdout.flush()

        try:
            await serve_data(settings, gateway, listen, stopper, on_serving=ready)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            stats.write_snapshot(directory)
    return 0


def worker_main() -> None:
    """Entry point of a worker process (started by :class:`Workers`, configured through the env)."""
    import uvloop

    conf = json.loads(os.environ.pop(WORKER_ENV))
    settings = Settings.from_json(conf["settings"])
    setup_logging(settings.log_level, settings.access_log)
    listen = socket.socket(fileno=conf["fd"])
    listen.setblocking(False)
    sys.exit(uvloop.run(_worker(settings, listen, Path(conf["dir"]), conf["parent"])))
