"""The pieces every serving process shares: runtime checks, sockets, signals, the gateway and its data port.

`proxy.ops.app` (one process) and `proxy.ops.supervisor` (``--workers N``) both build on these.
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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from proxy.autopilot.controller import Controller
from proxy.ops.accesslog import AccessLog
from proxy.ops.logs import event
from proxy.ops.metrics import RequestStats
from proxy.ops.reload import log_routes_errors, read_routes
from proxy.ops.settings import Address, Settings, shadow_env
from proxy.routing.model import AUTO
from proxy.routing.table import RoutesError, RouteTable
from proxy.server.counters import BUCKETS
from proxy.server.gateway import Gateway, GatewaySettings, ShadowSink
from proxy.shadow.admission import Shadower
from proxy.shadow.redis_pg import RedisPgStore
from proxy.shadow.replay import close_pools, open_pools
from proxy.shadow.store import DEFAULT_PREFIX

log = logging.getLogger("strangler.shadow")


class StartupError(Exception):
    """The gateway cannot start; the message says why and what to do (printed, exit 1)."""


@contextlib.asynccontextmanager
async def open_shadow(
    table: RouteTable, env: Mapping[str, str] | None = None
) -> AsyncIterator[Shadower | None]:
    """This process's shadow sink, configured from the environment (``shadow_env``), or None without Redis."""
    where = shadow_env(env)
    secret = where.dry_run_secret
    async with open_sink(table, where.redis_url, where.database_url, where.prefix, secret) as sink:
        yield sink


# Here rather than in proxy/shadow/admission.py: an async generator, which mypyc does not compile, and
# admission is on the compiled data path (proxy/compiled.py). Opening a sink is process set-up, not data path.
@contextlib.asynccontextmanager
async def open_sink(
    table: RouteTable,
    redis_url: str | None,
    database_url: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    secret: bytes | None = None,
) -> AsyncIterator[Shadower | None]:
    """The gateway's shadow sink (each serving process opens one), or None without ``redis_url``.

    Counters go to Redis (required), differing samples to PostgreSQL (optional), under ``prefix``;
    ``secret`` signs dry-run writes (without it writes are not shadowed). The values come from the
    environment through ``proxy.ops.settings.shadow_env`` (`open_shadow`). Shadow calls use pools of their
    own, separate from the data path's.
    """
    if not redis_url:
        log.warning("shadowing is off: REDIS_URL is unset (shadow counters live in Redis); set it, restart")
        yield None
        return
    store = await RedisPgStore.connect_lenient(redis_url, database_url, prefix)
    pools = open_pools(table.upstreams)
    shadower = Shadower(table.shadow_settings, pools, store, secret=secret, own_pools=True)
    await shadower.start()
    try:
        yield shadower
    finally:
        try:
            await shadower.close()
        finally:
            close_pools(shadower.own_pools)
            await store.aclose()


@contextlib.asynccontextmanager
async def open_autopilot(
    gateway: Gateway, stats: RequestStats, env: Mapping[str, str] | None = None
) -> AsyncIterator[Controller | None]:
    """This process's rollout controller (proxy.autopilot.controller), running until the block ends.

    It hands the stages to the data path through ``Gateway.set_stages(route -> basis points)``
    (proxy.server.canary splits by them). Without Redis, auto routes stay at stage 0 (shadowing), said once.
    """
    where = shadow_env(env)
    apply: Callable[[dict[str, int]], None] = gateway.set_stages
    if where.redis_url is None:
        auto = [r.name for r in gateway.table.routes if r.target == AUTO]
        if auto:
            event("rollout: no REDIS_URL, so target: auto routes stay at stage 0 (shadowing only)",
                  logging.WARNING, routes=auto)  # fmt: skip
        apply(dict.fromkeys(auto, 0))
        yield None
        return
    redis = aioredis.Redis.from_url(where.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    controller = Controller(
        redis, where.prefix, lambda: gateway.table, apply,
        served=lambda: (stats.counts(), stats.cells), bounds=BUCKETS,
        fallbacks=lambda: stats.data_path.fallbacks,  # new's failures legacy answered count as new's
    )  # fmt: skip
    task = asyncio.create_task(controller.run(), name="rollout")
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()


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
        GatewaySettings(
            trusted_hops=settings.trusted_hops,
            client_idle_timeout=settings.idle_timeout,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_body_bytes=settings.max_body,
            max_connections=settings.max_connections,
        ),
        observer=stats.requests,  # compiled (proxy.server.counters): once per request
        counters=stats.data_path,
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
    from proxy.server.listener import start_server  # the data path

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
