"""docs/ADOPTING.md, done: another team's Express app and Starlette service, the gateway installed alone.

The steps of the page, in its order, on loopback: install the gateway into a fresh virtualenv with
`pip install .` (no extras), discover the Express app's routes, run the gateway in front of both apps,
shadow reads and a write (the service verifies the dry run with `proxy.dryrun.asgi` and rolls it back),
read the report until the read route is READY, and flip it to the new service.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ORDERS_APP = ROOT / "tests" / "routing" / "orders_app"
SECRET = "adoption-test-dry-run-secret"
READ, WRITE = "get-api-v2-orders-orderId", "post-api-v2-orders"
MIN_COMPARED = 6

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def strangler() -> Iterator[Path]:
    """Step 1: the gateway alone, `pip install .` from a copy of the sources into a fresh virtualenv."""
    with tempfile.TemporaryDirectory(prefix="strangler-adopt-") as tmp:
        source, venv = Path(tmp) / "src", Path(tmp) / "venv"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        for package in ("proxy", "services"):
            shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = [str(venv / "bin" / "pip"), "install", "-q", str(source)]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        yield venv / "bin" / "strangler"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Child processes with their output in files; terminated (then killed) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Path:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.procs.append((name, proc))
        return log

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.logs.glob("*.log")))

    async def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """Start child processes; all stopped at the end."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        await procs.stop()



async def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a CLI command to completion; its stdout (stderr is shown when it fails)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {err.decode()[-3000:]}"
    return out.decode()


async def status_of(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


def shadowed(draft: dict[str, Any], legacy: int, new: int) -> dict[str, Any]:
    """Steps 2, 4 and 6: the draft pointed at the two apps, the read and the write shadowed."""
    draft["upstreams"] = {
        "legacy": {"url": f"http://127.0.0.1:{legacy}"},
        "new": {"url": f"http://127.0.0.1:{new}"},
    }
    # Latency is not what this test is about: two apps on a loaded machine can differ in speed at random.
    draft["shadow"] = {
        "min_compared": MIN_COMPARED, "latency_ratio": 0, "ready_min_s": 0, "ready_min_count": 0
    }  # fmt: skip
    for route in draft["routes"]:
        if route["name"] == READ:
            route["shadow"] = {"sample": 1.0}
        elif route["name"] == WRITE:
            route["shadow"] = {"sample": 1.0, "writes": True}
    return draft


async def test_adoption_path_from_express_to_the_first_python_endpoint(
    strangler: Path, processes: Processes, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """The ADOPTING.md steps with two apps that are not the example: discover, shadow, READY, flip."""
    legacy_port, new_port = free_port(), free_port()
    shadow_env = {
        "REDIS_URL": redis_url,
        "STRANGLER_SHADOW_PREFIX": redis_prefix,
        "STRANGLER_DRY_RUN_SECRET": SECRET,
    }
    async with aiohttp.ClientSession() as session:
        # The team's two apps, each on its own.
        await processes.start("legacy", ["node", "src/app.js"], ORDERS_APP, {"PORT": str(legacy_port)})
        await processes.start(
            "new",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "orders_service:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(new_port),
            ],
            HERE,
            {"STRANGLER_DRY_RUN_SECRET": SECRET},
        )
        for url in (f"http://127.0.0.1:{legacy_port}/status", f"http://127.0.0.1:{new_port}/healthz"):
            await eventually(
                lambda u=url: status_of(session, u), what=f"{url} to answer", within=30, last=processes.output
            )

        # Step 2: discover the routes, point the draft at the apps; step 4 and 6: shadow a read and a write.
        routes = tmp_path / "routes.yaml"
        await run([str(strangler), "routes", "discover", "--express", str(ORDERS_APP / "src" / "app.js"),
                   "--out", str(routes)], tmp_path)  # fmt: skip
        draft = yaml.safe_load(routes.read_text())
        assert {READ, WRITE} <= {r["name"] for r in draft["routes"]}
        assert all(r["target"] == "legacy" for r in draft["routes"])
        routes.write_text(yaml.safe_dump(shadowed(draft, legacy_port, new_port), sort_keys=False))
        await run([str(strangler), "routes", "check", str(routes)], tmp_path)

        # Step 3: the gateway in front of both.
        log = await processes.start(
            "gateway",
            [str(strangler), "proxy", "--routes", str(routes), "--listen", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--reload-interval", "0.2", "--no-access-log"],
            tmp_path,
            shadow_env,
        )  # fmt: skip

        def listening() -> dict[str, Any] | None:
            for line in log.read_text().splitlines():
                if '"listening"' in line:
                    event: dict[str, Any] = json.loads(line)
                    return event
            return None

        started = await eventually(listening, what="the gateway to listen", within=30, last=processes.output)
        gateway = f"http://{started['listen']}"

        # Reads: answered by legacy, copied to new and compared.
        for n in range(MIN_COMPARED):
            async with session.get(f"{gateway}/api/v2/orders/{n % 3 + 1}") as response:
                assert response.status == 200
                assert response.headers.get("X-Powered-By") == "Express"
        # A write: legacy creates order 4; the copy to new is a signed dry run, rolled back there.
        async with session.post(f"{gateway}/api/v2/orders", json={"item": "pen", "qty": 3}) as response:
            assert response.status == 201
            assert await response.json() == {"id": 4, "item": "pen", "qty": 3, "status": "open"}
            # The client's Host reached legacy, which built the URL from it.
            assert response.headers["Location"] == f"{gateway}/api/v2/orders/4"

        # Step 7: the report.
        async def report() -> dict[str, dict[str, Any]]:
            out = await run(
                [str(strangler), "report", "--routes", str(routes), "--format", "json"], tmp_path, shadow_env
            )
            return {r["name"]: r for r in json.loads(out)["routes"]}

        async def ready() -> dict[str, dict[str, Any]] | None:
            found = await report()
            read, write = found.get(READ), found.get(WRITE)
            if read and read["verdict"] == "READY" and write and write["compared"] >= 1:
                return found
            return None

        found = await eventually(ready, what=f"{READ} READY and {WRITE} compared", within=60, interval=0.5,
                                 last=lambda: processes.output())  # fmt: skip
        assert found[READ]["differed"] == 0
        # The dry run matched (same answer, same Location: both sides got the client's Host) and left nothing.
        assert (found[WRITE]["compared"], found[WRITE]["differed"]) == (1, 0)
        async with session.get(f"http://127.0.0.1:{new_port}/healthz") as response:
            assert await response.json() == {"ok": True, "committed": 0, "orders": 3}

        # Step 8: flip the READY route; the gateway reloads the file.
        draft = yaml.safe_load(routes.read_text())
        next(r for r in draft["routes"] if r["name"] == READ)["target"] = "new"
        routes.write_text(yaml.safe_dump(draft, sort_keys=False))

        async def served_by_new() -> bool:
            async with session.get(f"{gateway}/api/v2/orders/2") as response:
                body = await response.json()
                return (
                    response.status == 200
                    and "X-Powered-By" not in response.headers
                    and body["item"] == "lamp"
                )

        await eventually(
            served_by_new, what=f"{READ} served by the new service", within=30, last=processes.output
        )
