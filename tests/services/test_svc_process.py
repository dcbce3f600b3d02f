"""`python -m services` as a real process: serves on HOST:PORT, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from support.waiting import eventually_sync
from svc_kit import JWT_SECRET

from proxy.devstack.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_services_serves_and_stops_on_sigterm(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    """The service starts (uvloop), answers /health/ready, logs JSON with request ids, exits 0 on SIGTERM."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "JWT_SECRET": JWT_SECRET,
        "PORT": str(port),
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:

        def ready() -> httpx.Response:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            return httpx.get(f"http://127.0.0.1:{port}/health/ready", headers={"X-Request-Id": "boot"})

        response = eventually_sync(ready, what="the service up", within=20, ignore=(httpx.TransportError,))
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    lines = stderr.decode().splitlines()
    assert any('"msg":"listening"' in line and f'"port":{port}' in line for line in lines), lines
    assert any('"request_id":"boot"' in line for line in lines), lines


def test_unreachable_database_exits_1_with_a_message(redis_url: str) -> None:
    """With PostgreSQL unreachable at start, the process exits 1 and says what failed and what to check."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nope",
        "REDIS_URL": redis_url,
        "JWT_SECRET": JWT_SECRET,
        "PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "failed to start" in done.stderr and "DATABASE_URL" in done.stderr
