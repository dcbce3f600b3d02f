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
import logging
import socket
import sys

from aiohttp import web

from proxy import compiled
from proxy.ops.admin import AdminState, create_admin_app
from proxy.ops.logs import event, setup_logging
from proxy.ops.metrics import RequestStats, local_registry
from proxy.ops.reload import Reloader
from proxy.ops.serve import (
    StartupError,
    Stopper,
    apply_table,
    bind,
    build_gateway,
    check_runtime,
    install_signals,
    load_initial,
    open_autopilot,
    open_shadow,
    serve_data,
    sock_address,
)
from proxy.ops.settings import Settings
from proxy.routing.table import RouteTable


async def serve_single(settings: Settings, table: RouteTable, raw: bytes, listen: socket.socket,
                       admin: socket.socket) -> int:  # fmt: skip
    """One process: data port, admin port, watcher and signals, until SIGTERM has drained it."""
    stopper = Stopper(asyncio.Event())
    stats = RequestStats()
    state = AdminState(table, settings.routes, local_registry(stats), settings.health_timeout,
                       token=settings.admin_token, data_path=lambda: stats.data_path)
    async with contextlib.AsyncExitStack() as stack:
        shadow = await stack.enter_async_context(open_shadow(table))
        gateway = build_gateway(settings, table, stats, shadow)
        # The autopilot (issue 12): stops before the shadow sink closes (the exit stack unwinds in reverse).
        pilot = await stack.enter_async_context(open_autopilot(gateway, stats))
        state.stages = lambda: gateway.stages
        if pilot is not None:
            state.rollout = lambda: {"owner": pilot.owner, "leader": pilot.lease.held}
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
                compiled_data_path=compiled.BUILD.describe(),
            )

        try:
            await serve_data(settings, gateway, listen, stopper, draining, serving)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await runner.cleanup()
    return 0


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
        from proxy.ops.supervisor import supervise

        return uvloop.run(supervise(settings, table, raw, listen, admin))
    return uvloop.run(serve_single(settings, table, raw, listen, admin))
