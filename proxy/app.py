"""The gateway process: runtime checks, sockets, uvloop, signals, hot reload, graceful drain.

``run_proxy(settings)`` is `strangler proxy`. With one worker, this process serves both the data port and
the admin port. With ``--workers N`` it becomes a supervisor (proxy/supervisor.py) that binds the ports,
starts N worker processes sharing the listening socket, serves the admin port and restarts crashed
workers; each worker runs :func:`serve_data` here.

Shutdown on SIGTERM/SIGINT: /readyz turns 503, the listening socket closes (new connections are refused),
idle keep-alive connections close, in-flight requests get ``--drain-timeout`` seconds, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from proxy.accesslog import AccessLog
from proxy.admin import AdminState, create_admin_app
from proxy.gateway import Gateway, GatewaySettings, ShadowSink
from proxy.logs import event, setup_logging
from proxy.metrics import RequestStats, local_registry
from proxy.reload import Reloader, log_routes_errors, read_routes
from proxy.routes import RoutesError, RouteTable
from proxy.settings import Address, Settings
from proxy.shadow import open_sink


class StartupError(Exception):
    """The gateway cannot start; the message says why and what to do (printed, exit 1)."""


def check_runtime() -> None:
    """Refuse to start on a slow runtime: aiohttp without its C parser, or uvloop missing."""
    import aiohttp.http_parser

    parser_module = getattr(aiohttp.http_parser.HttpRequestParser, "__module__", "")
    if parser_module != "aiohttp._http_parser":
        hint = " (AIOHTTP_NO_EXTENSIONS is set: unset it)" if os.environ.get("AIOHTTP_NO_EXTENSIONS") else ""
        raise StartupError(
            f"aiohttp is using its pure-Python HTTP parser ({parser_module}){hint}; the gateway needs the C "
            "extensions. Reinstall aiohttp from a binary wheel (pip install --force-reinstall aiohttp)."
        )
    try:
        import uvloop  # noqa: F401  # imported to prove it is installed
    except ImportError:
        raise StartupError("uvloop is not installed; install it (pip install uvloop) and retry.") from None


def bind(address: Address, what: str, flag: str) -> socket.socket:
    """Bind and listen on ``address``; a port in use or a bad host becomes a StartupError naming it."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{what} address {address} is already in use by another process; stop it or pass another "
                f"{flag}."
            ) from None
        raise StartupError(f"cannot listen on {what} address {address} ({flag}): {exc.strerror}.") from None
    sock.setblocking(False)
    return sock


def sock_address(sock: socket.socket) -> str:
    """host:port a bound socket really listens on (port 0 resolved)."""
    host, port = sock.getsockname()[:2]
    return str(Address(host, port))


def build_gateway(settings: Settings, table: RouteTable, stats: RequestStats,
                  shadow: ShadowSink | None) -> Gateway:  # fmt: skip
    """The data path's state for one serving process (single-process mode or a worker)."""
    access_log = AccessLog(sys.stderr.fileno()) if settings.access_log else None
    return Gateway(
        table,
        GatewaySettings(trusted_hops=settings.trusted_hops),
        observer=stats,
        shadow=shadow,
        access_log=access_log,
    )


def apply_table(gateway: Gateway, table: RouteTable) -> None:
    """Make ``table`` live: the data path's table and pools, then the shadow sink's (if it tracks them)."""
    gateway.set_table(table)
    set_shadow_table = getattr(gateway.shadow, "set_table", None)
    if set_shadow_table is not None:
        set_shadow_table(table)


@dataclass
class Stopper:
    """Set by SIGTERM/SIGINT; the serving coroutines wait on it."""

    event: asyncio.Event
    signal_name: str = ""

    def stop(self, name: str) -> None:
        """Begin the drain (idempotent: a second signal changes nothing)."""
        if not self.event.is_set():
            self.signal_name = name
            self.event.set()


def install_signals(stopper: Stopper, on_hup: Callable[[], object]) -> None:
    """SIGTERM/SIGINT drain and exit; SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopper.stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stopper.stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_hup)


async def serve_data(
    settings: Settings,
    gateway: Gateway,
    listen: socket.socket,
    stopper: Stopper,
    on_draining: Callable[[], None] = lambda: None,
    on_serving: Callable[[], None] = lambda: None,
) -> None:
    """Serve the data port until ``stopper`` fires, then drain within ``settings.drain_timeout``."""
    from proxy.server import start_server  # the data path

    server = await start_server(gateway, listen)
    on_serving()
    await stopper.event.wait()
    on_draining()
    access = gateway.access_log if isinstance(gateway.access_log, AccessLog) else None
    if access is not None:
        access.flush()  # lines of requests served before the signal come before "draining"
    event("draining", signal=stopper.signal_name, drain_timeout=settings.drain_timeout)
    try:
        finished = await server.drain(settings.drain_timeout)
        gateway.close()
    finally:
        if access is not None:
            access.drain()  # buffered lines go out before "drained" and the exit
    event("drained", all_finished=finished)


async def serve_single(settings: Settings, table: RouteTable, raw: bytes, listen: socket.socket,
                       admin: socket.socket) -> int:  # fmt: skip
    """One process: data port, admin port, watcher and signals, until SIGTERM has drained it."""
    stopper = Stopper(asyncio.Event())
    stats = RequestStats()
    state = AdminState(table, settings.routes, local_registry(stats), settings.health_timeout)
    async with open_sink(settings, table) as shadow:
        gateway = build_gateway(settings, table, stats, shadow)
        reloader = Reloader(settings.routes, state, lambda t, _raw: apply_table(gateway, t), raw)
        install_signals(stopper, lambda: reloader.reload("SIGHUP"))
        runner = web.AppRunner(create_admin_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, admin).start()
        watcher = asyncio.create_task(reloader.watch(settings.reload_interval), name="routes-watcher")

        def draining() -> None:
            state.draining = True

        def serving() -> None:
            # Logged once the data port accepts: `strangler run` and operators wait for this line.
            event(
                "listening",
                listen=sock_address(listen),
                admin=sock_address(admin),
                workers=1,
                routes=settings.routes,
                sha256=table.sha256,
            )

        try:
            await serve_data(settings, gateway, listen, stopper, draining, serving)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await runner.cleanup()
    return 0


def load_initial(path: str) -> tuple[RouteTable, bytes]:
    """Load the routes file at start-up; every error is printed with file:line before exiting 1."""
    try:
        return read_routes(path)
    except RoutesError as exc:
        log_routes_errors(exc, "routes file is invalid")
        for error in exc.errors:
            print(f"strangler proxy: {error}", file=sys.stderr)
        raise StartupError(
            f"{len(exc.errors)} error(s) in {path}; fix them (strangler routes check {path}) and start again."
        ) from None


def run_proxy(settings: Settings) -> int:
    """`strangler proxy`: start, serve until SIGTERM, drain; return the exit code."""
    setup_logging(settings.log_level, settings.access_log)
    try:
        check_runtime()
        table, raw = load_initial(settings.routes)
        listen = bind(settings.listen, "listen", "--listen")
        try:
            admin = bind(settings.admin, "admin", "--admin")
        except StartupError:
            listen.close()
            raise
    except StartupError as exc:
        event("start failed", logging.ERROR, error=str(exc))
        print(f"strangler proxy: {exc}", file=sys.stderr)
        return 1
    import uvloop

    if settings.workers > 1:
        from proxy.supervisor import supervise

        return uvloop.run(supervise(settings, table, raw, listen, admin))
    return uvloop.run(serve_single(settings, table, raw, listen, admin))
