"""Helpers for the gateway-operations tests: loopback upstreams, routes files, a real gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Upstream:
    """A loopback HTTP server answering {"backend": name, "path": ...}; /slow waits ``delay`` seconds."""

    name: str
    runner: web.AppRunner
    port: int
    hits: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def upstream(
    name: str, delay: float = 1.0, hold: asyncio.Event | None = None
) -> AsyncIterator[Upstream]:
    """Run one loopback upstream for the duration of the block; with ``hold``, /slow answers once the
    test sets it (instead of after ``delay`` seconds): a request in flight for as long as the test says."""
    holder: list[Upstream] = []

    async def handle(request: web.Request) -> web.Response:
        holder[0].hits += 1
        if request.path.endswith("/slow"):
            if hold is not None:
                await hold.wait()
            else:
                await asyncio.sleep(delay)
        await request.read()
        return web.json_response({"backend": name, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    holder.append(Upstream(name, runner, port))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


def routes_text(legacy: str, new: str, items_target: str = "legacy") -> str:
    """A routes file: /items/{id} goes to ``items_target``, everything else to legacy."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "{legacy}", connect_timeout: 1.0, timeout: 10.0, pool_size: 64}}\n'
        f'  new: {{url: "{new}", connect_timeout: 1.0, timeout: 10.0, pool_size: 64}}\n'
        "default: legacy\n"
        "routes:\n"
        "  - name: items\n"
        '    match: {methods: [GET], path: "/items/{id}"}\n'
        f"    target: {items_target}\n"
        "  - name: slow\n"
        "    match: {path: /slow}\n"
        "    target: legacy\n"
    )


INVALID_ROUTES = (
    "upstreams:\n"
    '  legacy: {url: "http://127.0.0.1:1"}\n'
    "default: legacy\n"
    "routes:\n"
    "  - name: broken\n"
    '    match: {path: "/x/{id}"}\n'
    "    target: nowhere\n"
)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` the way editors and ConfigMaps do: write a sibling, rename over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class GatewayProcess:
    """A real `python -m proxy proxy` process; its JSON log lines are collected as they arrive."""

    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    listen: str = ""
    admin: str = ""
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(text))

    async def wait_for(self, msg: str, within: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first log line at index >= ``after`` whose msg is ``msg`` (bounded wait)."""

        def found() -> dict[str, Any] | None:
            line = next((line for line in self.lines[after:] if line.get("msg") == msg), None)
            if line is None and self.proc.returncode is not None and self._reader is not None:
                assert not self._reader.done(), f"exited without a {msg!r} log line; stderr:\n" + self.tail()
            return line

        return await eventually(found, what=f"a {msg!r} log line", within=within, last=self.tail)

    def tail(self, n: int = 40) -> str:
        """The last ``n`` lines of stderr, for failure messages."""
        return "\n".join(self.raw[-n:])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def stop(self, within: float = 20.0) -> int:
        """SIGTERM (if still running) and wait; SIGKILL if it does not exit in time."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code


async def start_gateway(routes: Path, *flags: str, env: dict[str, str] | None = None) -> GatewayProcess:
    """Start the gateway on free loopback ports and wait for its "listening" line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "proxy",
        "--routes",
        str(routes),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        *flags,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        env={**os.environ, **(env or {})},
    )
    gw = GatewayProcess(proc)
    gw._reader = asyncio.create_task(gw._read())
    try:
        ready = await gw.wait_for("listening")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    gw.listen, gw.admin = ready["listen"], ready["admin"]
    return gw
