"""`strangler run` (what `make run` calls): the whole system on one machine.

Start order: PostgreSQL and Redis (embedded ones under `.strangler/` unless DATABASE_URL / REDIS_URL are
set; the embedded Redis keeps its data in an append-only file on a stable port, so shadow counters survive
restarts) -> migrations -> legacy and new (your two apps' commands, or the worked example's
`node legacy/src/server.js` and `python -m services`) -> the gateway (`strangler proxy`) in front.
Every child's output is streamed, prefixed with its name. Ctrl-C or SIGTERM stops the gateway first (it
drains while the backends still answer), then both services, then the embedded databases, and exits 0.
If a child dies on its own, the rest are stopped and the exit status is 1, naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]  # no stubs
import httpx

from proxy.devstack.embedded import EmbeddedPostgres, EmbeddedRedis
from proxy.devstack.parts import (
    ROOT,
    Child,
    StackConfig,
    StackError,
    app_argv,
    check_port_free,
    effective_routes,
    migrations_dir,
    parse_config,
)
from proxy.routing.table import RoutesError, load_routes

DATABASE = "strangler"


def say(message: str) -> None:
    """One line of `strangler run`'s own output, in the same prefixed stream as the children's."""
    with contextlib.suppress(BrokenPipeError, ValueError):  # nobody reading our output must not stop us
        sys.stdout.write(f"{'strangler':>8} | {message}\n")
        sys.stdout.flush()


class Stack:
    """The running system: databases, the three children, and the order they stop in."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.signals = 0
        self.pg: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.routes_file = config.routes
        self.commands: dict[str, str] = {}

    # --- signals ---

    def _on_signal(self, signum: int) -> None:
        self.signals += 1
        if self.signals == 1:
            say(f"{signal.Signals(signum).name}: stopping (again to stop at once)")
            self.stopping.set()
        else:
            for child in self.children:  # a second Ctrl-C: no more waiting
                child.signal_group(signal.SIGKILL)

    # --- databases ---

    async def _databases(self) -> tuple[str, str]:
        """Return (database URL, redis URL), starting embedded servers for whichever is not configured."""
        cfg = self.config
        db_url, redis_url = cfg.database_url, cfg.redis_url
        if redis_url is None:
            # Started from this (the main) thread on purpose: its parent-death signal is tied to the
            # thread that forked it, and a worker thread of to_thread() may go away before we do.
            try:
                self.redis = EmbeddedRedis(cfg.state_dir / "redis", persist=True).start()
            except (OSError, RuntimeError) as exc:
                raise StackError(f"the embedded Redis did not start: {exc}. Set REDIS_URL to use "
                                 "a Redis of your own.") from None
            redis_url = self.redis.url
        if db_url is None:
            db_url = await self._embedded_postgres()
        folder = migrations_dir(cfg)
        if folder is not None:
            try:
                from services.migrate import migrate
            except ImportError as exc:
                raise StackError(f"cannot import services.migrate ({exc}); run `make install`") from None
            try:
                await migrate(db_url, folder)
            except (OSError, asyncpg.PostgresError) as exc:
                raise StackError(f"migrations in {folder} failed on {db_url}: {exc}") from None
        return db_url, redis_url

    async def _embedded_postgres(self) -> str:
        """Start (or reuse) the embedded server under the state dir; return the URL of our database."""
        data = self.config.state_dir / "pg"
        try:
            self.pg = await asyncio.to_thread(EmbeddedPostgres(data).start)
            admin = await asyncpg.connect(self.pg.url)
            try:
                if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                    await admin.execute(f'CREATE DATABASE "{DATABASE}"')
            finally:
                await admin.close()
        except (OSError, RuntimeError, subprocess.SubprocessError, asyncpg.PostgresError) as exc:
            raise StackError(f"the embedded PostgreSQL did not start ({exc}); the lines above say why. Its "
                             f"data and log are in {data} (delete it to start afresh), or set DATABASE_URL "
                             "to use a server of your own.") from None
        return self.pg.url.rsplit("/", 1)[0] + "/" + DATABASE

    def _stop_databases(self) -> None:
        for name, server in (("redis", self.redis), ("postgres", self.pg)):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # report and keep stopping the other one
                    say(f"could not stop embedded {name} cleanly: {exc}")
        self.redis = self.pg = None

    # --- children ---

    def _children(self, db_url: str, redis_url: str) -> tuple[list[Child], Child]:
        cfg = self.config
        base = dict(os.environ)
        base.update({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "JWT_SECRET": cfg.jwt_secret,
                     "DRY_RUN_SECRET": cfg.dry_run_secret, "HOST": "127.0.0.1"})
        # The services sit behind the gateway: one trusted hop, so rate limits see the real client.
        base.setdefault("TRUSTED_HOPS", "1")
        legacy = Child("legacy", app_argv(cfg, "legacy"), {**base, "PORT": str(cfg.legacy_port)},
                       f"http://127.0.0.1:{cfg.legacy_port}{cfg.legacy_health}",
                       cwd=cfg.workdir if cfg.legacy_cmd else ROOT)
        new = Child("new", app_argv(cfg, "new"), {**base, "PORT": str(cfg.new_port)},
                    f"http://127.0.0.1:{cfg.new_port}{cfg.new_health}",
                    cwd=cfg.workdir if cfg.new_cmd else ROOT)
        self.commands = {"legacy": shlex.join(legacy.argv), "new": shlex.join(new.argv)}
        self.routes_file = effective_routes(cfg.routes, {"legacy": cfg.legacy_port, "new": cfg.new_port},
                                            cfg.state_dir)
        listen, admin = (f"{h}:{p}" for h, p in (cfg.listen, cfg.admin))
        gateway = Child("gateway", [sys.executable, "-m", "proxy", "proxy", "--routes", str(self.routes_file),
                                    "--listen", listen, "--admin", admin], dict(base),
                        f"http://{cfg.admin[0]}:{cfg.admin[1]}/readyz")
        return [legacy, new], gateway

    async def _wait_ready(self, children: list[Child]) -> None:
        """Poll each child's readiness URL until 200; raise naming the one that died or timed out."""
        deadline = time.monotonic() + self.config.ready_timeout
        pending = list(children)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for child in list(pending):
                    if child.returncode is not None:
                        raise StackError(f"{child.name} exited with status {child.returncode} while "
                                         "starting; its output is above")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(child.ready_url)).status_code == 200:
                            pending.remove(child)
                if self.stopping.is_set():
                    return
                if pending and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise StackError(f"{names} not ready within {self.config.ready_timeout:g}s "
                                     f"(polling {pending[0].ready_url}); see the output above")
                await asyncio.sleep(0.2)

    def _table(self, db_url: str, redis_url: str) -> str:
        cfg = self.config
        rows = [
            ("gateway", f"http://{cfg.listen[0]}:{cfg.listen[1]}", f"routes: {self.routes_file}"),
            ("admin", f"http://{cfg.admin[0]}:{cfg.admin[1]}", "/healthz /readyz /routes /metrics /report"),
            ("legacy", f"http://127.0.0.1:{cfg.legacy_port}", self.commands["legacy"]),
            ("new", f"http://127.0.0.1:{cfg.new_port}", self.commands["new"]),
            ("postgres", db_url, "embedded" if self.pg else "DATABASE_URL"),
            ("redis", redis_url, f"embedded, kept in {self.redis.data_dir}" if self.redis else "REDIS_URL"),
        ]
        width = max(len(r[1]) for r in rows)
        lines = [f"  {name:<9}{where:<{width}}  {note}" for name, where, note in rows]
        report = f"shadow report: strangler report --redis-url '{redis_url}' --database-url '{db_url}'"
        return "strangler is up; Ctrl-C stops everything\n" + "\n".join(lines) + "\n" + report

    async def _watch_routes(self) -> None:
        """Keep the generated routes copy in step with the user's file, so the gateway's reload works."""
        if self.routes_file == self.config.routes:
            return
        ports = {"legacy": self.config.legacy_port, "new": self.config.new_port}
        last = self.config.routes.stat().st_mtime_ns
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(OSError):
                now = self.config.routes.stat().st_mtime_ns
                if now != last:
                    last = now
                    try:
                        effective_routes(self.config.routes, ports, self.config.state_dir)
                    except StackError as exc:
                        say(f"routes file not reloaded: {exc}")

    # --- the whole run ---

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        cfg = self.config
        planned = (("the gateway", cfg.listen, "--listen"), ("admin", cfg.admin, "--admin"),
                   ("legacy", ("127.0.0.1", cfg.legacy_port), "--legacy-port"),
                   ("new", ("127.0.0.1", cfg.new_port), "--new-port"))
        for who, (host, port), flag in planned:
            check_port_free(host, port, who, flag)
        try:  # a broken routes file would only show when the gateway starts, after everything else
            load_routes(cfg.routes)
        except RoutesError as exc:
            raise StackError(f"the routes file has errors; fix them and start again:\n{exc}") from None
        status = 1
        try:
            status = await self._start_and_supervise()
        finally:
            complaints = await self._stop_children()
            self._stop_databases()
            for line in complaints:
                say(line)
            say("stopped")
        # A child that had to be killed did not stop cleanly: say so in the exit status too.
        return max(status, 1) if complaints else status

    async def _start_and_supervise(self) -> int:
        db_url, redis_url = await self._databases()
        if self.stopping.is_set():
            return 0
        services, gateway = self._children(db_url, redis_url)
        for child in services:
            self.children.append(child)
            await child.start()
        await self._wait_ready(services)
        if not self.stopping.is_set():
            self.children.append(gateway)
            await gateway.start()
            await self._wait_ready([gateway])
        if not self.stopping.is_set():
            say(self._table(db_url, redis_url))
        return await self._supervise()

    async def _supervise(self) -> int:
        """Wait for a signal (exit 0) or for a child to die on its own (exit 1, naming it)."""
        stop = asyncio.create_task(self.stopping.wait())
        watcher = asyncio.create_task(self._watch_routes())
        exits = {child.exited: child for child in self.children if child.exited is not None}
        try:
            done, _ = await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if stop in done:
            return 0
        dead = next(exits[t] for t in done if t in exits)
        say(f"{dead.name} exited with status {dead.returncode} on its own; stopping the rest")
        return 1

    async def _stop_children(self) -> list[str]:
        """Gateway first, then the services together; returns complaints about forced kills."""
        timeout = self.config.stop_timeout
        gateway = [c for c in self.children if c.name == "gateway"]
        services = [c for c in self.children if c.name != "gateway"]
        complaints = [await c.stop(timeout) for c in gateway]
        complaints += await asyncio.gather(*(c.stop(timeout) for c in services))
        return [c for c in complaints if c]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `strangler run`; returns the exit status."""
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
        stack = Stack(config)
        status = asyncio.run(stack.run())
    except StackError as exc:
        print(f"strangler run: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover - `python -m proxy.devstack.stack`
    sys.exit(main())
