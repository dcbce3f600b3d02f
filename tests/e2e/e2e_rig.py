"""End-to-end rig: the real legacy app, the real new service and a real gateway process.

No third launcher: the services come from the contract suite's ``contract_stack.Stack`` (the new service
as its ``new-mutant``: SERVICES_TEST_MODE=1 SERVICES_TEST_DIFF=user.name, so a user it renders has a "!"
appended to its name) and the gateway from the operations tests' ``opshelp.start_gateway``. Requests go
out as raw bytes on a socket, so no HTTP client normalises the target before the gateway sees it.
A module of its own (not conftest.py) so test modules can import it by a name no other directory uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from proxy.routing.table import RouteTable, load_routes

# The contract launchers live in a test directory that is not a package; make them importable by name.
_dir = str(Path(__file__).resolve().parents[1] / "contract")
if _dir not in sys.path:
    sys.path.append(_dir)

from contract_kit import Account, Api  # noqa: E402  (needs the path above)
from contract_stack import MUTANT, Stack  # noqa: E402
from support.opshelp import GatewayProcess, start_gateway  # noqa: E402

SERVICE = {"legacy": "legacy", "new": MUTANT}  # routing-table upstream -> Stack service name


def routes_text(legacy_port: int, new_port: int) -> str:
    """``GET /api/v1/users/{id}`` to new, everything else to legacy."""
    return (
        "upstreams:\n"
        f'  legacy: {{url: "http://127.0.0.1:{legacy_port}", connect_timeout: 2.0, timeout: 10.0}}\n'
        f'  new: {{url: "http://127.0.0.1:{new_port}", connect_timeout: 2.0, timeout: 10.0}}\n'
        "default: legacy\n"
        "routes:\n"
        "  - name: users-get\n"
        '    match: {methods: [GET], path: "/api/v1/users/{id}"}\n'
        "    target: new\n"
    )


@dataclass(frozen=True)
class Reply:
    """One raw HTTP/1.1 response: status, headers (lower-case names; the last one wins), decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += rest[:size]
        data = rest[size + 2 :]


def parse_reply(data: bytes) -> Reply:
    """Parse a whole response read until the server closed the connection."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        assert len(body) == length, f"body of {len(body)} bytes, Content-Length {length}"
    return Reply(status, headers, body)


async def raw_get(port: int, target: bytes) -> Reply:
    """Send ``GET <target> HTTP/1.1`` exactly as given (no normalisation) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10.0):  # every side closes after one answer (Connection: close)
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_reply(data)


@dataclass
class System:
    """The running system: one port per upstream name, the gateway, its table and the created user."""

    ports: dict[str, int]
    gateway: GatewayProcess
    table: RouteTable
    user: Account

    @property
    def gateway_port(self) -> int:
        return int(self.gateway.listen.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def services(make_database: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """legacy and new (test mode) on one migrated database and Redis prefix; stopped at the end."""
    stack = Stack(database_url=make_database(), redis_url=redis_url, log_dir=tmp_path_factory.mktemp("e2e"))
    try:
        for name in SERVICE.values():
            stack.start(name)
        yield stack
    finally:
        problems = stack.close()
        assert not problems, problems


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(services: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """A `strangler proxy` process in front of both services, and one user registered through legacy."""
    ports = {upstream: services.running[name].port for upstream, name in SERVICE.items()}
    routes = tmp_path_factory.mktemp("e2e-routes") / "routes.yaml"
    routes.write_text(routes_text(ports["legacy"], ports["new"]))
    api = Api("legacy", services.running["legacy"].base_url)
    try:
        user = await asyncio.to_thread(api.register, name="Path Walker")
    finally:
        api.close()
    gateway = await start_gateway(routes, "--access-log", "false")
    try:
        yield System(ports, gateway, load_routes(routes), user)
    finally:
        assert await gateway.stop() == 0, "\n".join(gateway.raw[-40:])
