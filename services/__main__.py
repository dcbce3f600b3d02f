"""``python -m services``: run the new service on HOST:PORT with uvloop until SIGTERM/SIGINT.

A bad configuration prints the variable and the problem and exits with status 2.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

import uvloop
from aiohttp import web

from services.app import create_app
from services.logs import setup_logging
from services.settings import Settings, SettingsError, load_settings
from services.wire import Runner

log = logging.getLogger("services")


async def serve(settings: Settings) -> None:
    """Serve until a termination signal, then shut down gracefully."""
    # wire.Runner: an unparseable request gets the contract's JSON error (docs/API.md, "The HTTP edge").
    runner = Runner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    # Everything alive now lives as long as the process: keep it out of the collector's scans,
    # which shortens the GC pauses that show up in p99 latency.
    gc.collect()
    gc.freeze()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        # PORT=0 asks the kernel for a free port; log the one we got.
        port = runner.addresses[0][1] if runner.addresses else settings.port
        log.info("listening", extra={"host": settings.host, "port": port})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main() -> int:
    """Entry point; returns the exit status."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"services: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        uvloop.run(serve(settings))
    except Exception as exc:  # cannot bind, or PostgreSQL unreachable / refusing us at start
        log.error(
            "failed to start: %s: %s; check HOST/PORT and that DATABASE_URL points at a migrated, reachable "
            "database (run `strangler migrate`)",
            type(exc).__name__,
            exc,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
