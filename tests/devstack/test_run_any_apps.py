"""`strangler run` with a team's own two apps: commands, ports and health paths from a config file and
flags, no example migrations, and an embedded Redis that keeps its data and port across restarts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from test_stack import STRANGLER, Run, cleanup, free_port

from proxy.devstack.parts import StackError, app_argv, migrations_dir, parse_config

HERE = Path(__file__).resolve().parent
ROUTES = """\
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
default: legacy
routes:
  - name: moved
    match: {methods: [GET], path: /moved}
    target: new
"""


def test_a_config_file_describes_both_apps(tmp_path: Path) -> None:
    """Nested per-side keys, paths relative to the file; flags beat env, env beats the file."""
    (tmp_path / "conf").mkdir()
    conf = tmp_path / "conf" / "run.yaml"
    conf.write_text("legacy: {cmd: 'node server.js --port {port}', port: 4100, health: /up}\n"
                    "new: {cmd: 'uvicorn app:app --port {port}', port: 4200}\nmigrations: none\n"
                    "routes: ../routes.yaml\n")  # fmt: skip
    cfg = parse_config(["--config", str(conf), "--new-port", "4300"], {"STRANGLER_LEGACY_HEALTH": "/live"})
    assert (cfg.legacy_port, cfg.new_port) == (4100, 4300)
    assert (cfg.legacy_health, cfg.new_health) == ("/live", "/health/ready")
    assert cfg.routes == tmp_path / "routes.yaml" and migrations_dir(cfg) is None
    assert app_argv(cfg, "legacy") == ["node", "server.js", "--port", "4100"]
    assert app_argv(cfg, "new") == ["uvicorn", "app:app", "--port", "4300"]


def test_the_example_is_the_default_and_brings_its_migrations() -> None:
    """Without commands both sides are the worked example, with the example's migrations."""
    cfg = parse_config([], {})
    assert app_argv(cfg, "new")[1:] == ["-m", "services"]
    assert app_argv(cfg, "legacy")[-1].endswith("server.js")
    folder = migrations_dir(cfg)
    assert folder is not None and folder.name == "migrations"
    assert migrations_dir(parse_config(["--new-cmd", "python app.py"], {})) is None


@pytest.mark.parametrize(("argv", "says"), [
    (["--legacy-health", "health"], "--legacy-health"),
    (["--new-cmd", "python 'unclosed"], "--new-cmd"),
    (["--new-cmd", ""], None),
])  # fmt: skip
def test_bad_app_settings_name_the_flag(argv: list[str], says: str | None) -> None:
    """A health path without /, or a command that cannot be split, is refused naming the flag."""
    if says is None:
        assert parse_config(argv, {}).new_cmd == ""  # empty: the example's side
        return
    with pytest.raises(StackError, match=re.escape(says)):
        parse_config(argv, {})


def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    """A typo in the config file is an error naming the key, not a silent default."""
    conf = tmp_path / "run.yaml"
    conf.write_text("legacy: {command: node x.js}\n")
    with pytest.raises(StackError, match=r"legacy\.command"):
        parse_config(["--config", str(conf)], {})


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A team's checkout (outside our repository), readable by the embedded PostgreSQL's user."""
    path = Path(tempfile.mkdtemp(prefix="strangler-team-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def start(workdir: Path, ports: dict[str, int]) -> Run:
    argv = [str(STRANGLER), "run", "--config", "strangler-run.yaml",
            "--listen", f"127.0.0.1:{ports['gateway']}", "--admin", f"127.0.0.1:{ports['admin']}",
            "--legacy-port", str(ports["legacy"]), "--new-port", str(ports["new"]), "--stop-timeout", "10"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    return Run(proc, workdir / ".strangler", ports)


def test_run_serves_two_apps_of_our_own_and_keeps_redis_across_restarts(workdir: Path) -> None:
    """Two apps that are not the example run behind the gateway from their own folder; the embedded Redis
    comes back on the same port with its data after a restart."""
    (workdir / "routes.yaml").write_text(ROUTES)
    app = HERE / "tiny_app.py"
    (workdir / "strangler-run.yaml").write_text(
        f"legacy: {{cmd: '{sys.executable} {app} legacy {{port}}', health: /ready}}\n"
        f"new: {{cmd: '{sys.executable} {app} new {{port}}', health: /ready}}\n"
        "migrations: none\n")  # fmt: skip
    ports = {name: free_port() for name in ("gateway", "admin", "legacy", "new")}
    first = start(workdir, ports)
    try:
        first.wait_up(60)
        assert httpx.get(first.url("/anything")).json() == {"side": "legacy", "path": "/anything"}
        assert httpx.get(first.url("/moved")).json()["side"] == "new"
        assert f"{app} legacy {ports['legacy']}" in first.text  # the table shows the real command
        redis_url = re.search(r"redis://127\.0\.0\.1:\d+/0", first.text)
        assert redis_url is not None
        redis.Redis.from_url(redis_url.group()).set("survives", b"yes")
        assert first.stop(signal.SIGTERM, 30) == 0
    finally:
        cleanup(first)
    second = start(workdir, {name: free_port() for name in ports})
    try:
        second.wait_up(60)
        assert redis_url.group() in second.text  # same port: the printed report command still works
        assert redis.Redis.from_url(redis_url.group()).get("survives") == b"yes"
        assert second.stop(signal.SIGTERM, 30) == 0
    finally:
        cleanup(second)
