"""Pieces of `strangler run`: its configuration, the effective routes file, and one supervised child.

Kept apart from `stack.py` (the orchestration) so each can be read and tested on its own.

`strangler run` runs any two apps: each side's command, port and health path come from flags, env or a
small YAML file (``--config strangler-run.yaml``); without them it runs the repository's worked example
(``node legacy/src/server.js`` and ``python -m services``). A command is split like a shell would
(no shell runs it) and ``{port}`` in it is replaced by the side's port, which is also in ``PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from proxy.devstack.embedded import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


class StackError(Exception):
    """`strangler run` cannot go on; the message says what happened and what to do."""


@dataclass(frozen=True)
class StackConfig:
    """Where each part listens and where state lives; parsed once from flags, then env, then defaults."""

    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin: tuple[str, int] = ("127.0.0.1", 8081)
    legacy_port: int = 3000
    new_port: int = 8000
    # The two apps: "" runs the worked example's side; otherwise a command line ({port} substituted).
    legacy_cmd: str = ""
    new_cmd: str = ""
    legacy_health: str = "/health/ready"
    new_health: str = "/health/ready"
    # SQL migrations applied to the database first ("" = the example's when both sides are the example).
    migrations: str = ""
    routes: Path = field(default_factory=lambda: Path("routes.yaml").resolve())
    state_dir: Path = field(default_factory=lambda: Path(".strangler").resolve())
    # Where the apps' commands run: the directory `strangler run` was started in (the example: the repo).
    workdir: Path = field(default_factory=Path.cwd)
    database_url: str | None = None
    redis_url: str | None = None
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48), repr=False)
    dry_run_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    ready_timeout: float = 60.0
    stop_timeout: float = 15.0


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return host.strip("[]"), int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"expected a port between 1 and 65535 (got {text!r})")
    return int(text)


def _path(text: str) -> Path:
    # Absolute now: the children run with the repository as their working directory.
    return Path(text).expanduser().resolve()


def _health(text: str) -> str:
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise ValueError(f"expected a path starting with /, e.g. /health (got {text!r})")
    return text


def _command(text: str) -> str:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r} into arguments: {exc}") from None
    if not argv:
        raise ValueError("the command is empty")
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number of seconds (got {text!r})")
    return value


# flag -> (field, env key, parser, help)
_FLAGS: dict[str, tuple[str, str, Any, str]] = {
    "--listen": ("listen", "STRANGLER_LISTEN", _address, "HOST:PORT of the gateway"),
    "--admin": ("admin", "STRANGLER_ADMIN", _address, "HOST:PORT of the gateway's admin server"),
    "--legacy-port": ("legacy_port", "LEGACY_PORT", _port, "loopback port of the legacy Node.js app"),
    "--new-port": ("new_port", "NEW_PORT", _port, "loopback port of the new Python service"),
    "--legacy-cmd": ("legacy_cmd", "STRANGLER_LEGACY_CMD", _command,
                     "command starting the legacy app ({port} is its port; also in PORT)"),
    "--new-cmd": ("new_cmd", "STRANGLER_NEW_CMD", _command, "command starting the new service (likewise)"),
    "--legacy-health": ("legacy_health", "STRANGLER_LEGACY_HEALTH", _health,
                        "path answering 200 once the legacy app is ready"),
    "--new-health": ("new_health", "STRANGLER_NEW_HEALTH", _health, "the same for the new service"),
    "--migrations": ("migrations", "STRANGLER_MIGRATIONS", str,
                     "folder of numbered .sql migrations applied first, or 'none'"),
    "--routes": ("routes", "STRANGLER_ROUTES", _path, "routes file (copied with these ports if needed)"),
    "--state-dir": ("state_dir", "STRANGLER_STATE_DIR", _path, "where embedded PostgreSQL/Redis keep data"),
    "--ready-timeout": ("ready_timeout", "STRANGLER_READY_TIMEOUT", _seconds, "seconds a part gets to start"),
    "--stop-timeout": ("stop_timeout", "STRANGLER_STOP_TIMEOUT", _seconds,
                       "seconds a part gets to stop before it is killed"),
}


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> StackConfig:
    """Build the config from flags, then env, then defaults; raise StackError naming a bad value."""
    defaults = StackConfig()
    parser = argparse.ArgumentParser(
        prog="strangler run",
        description="Run the whole system locally: PostgreSQL and Redis (embedded under .strangler/ unless "
                    "DATABASE_URL / REDIS_URL are set), migrations, legacy, new, and the gateway in front. "
                    "JWT_SECRET and DRY_RUN_SECRET are generated unless set. Ctrl-C stops it all.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with any of these settings, e.g. "
                        "{legacy: {cmd, port, health}, new: {...}, routes, state_dir, migrations} "
                        "(env STRANGLER_RUN_CONFIG; flags and env win over it)")
    for flag, (name, key, _, text) in _FLAGS.items():
        default = getattr(defaults, name)
        shown = f"{default[0]}:{default[1]}" if isinstance(default, tuple) else default
        if isinstance(default, Path):
            shown = default.relative_to(Path.cwd()) if default.is_relative_to(Path.cwd()) else default
        if name in ("legacy_cmd", "new_cmd", "migrations") and not default:
            shown = "the worked example's"
        parser.add_argument(flag, dest=name, metavar="VALUE", help=f"{text} (env {key}, default {shown})")
    args = parser.parse_args(list(argv))
    config_file = args.config or env.get("STRANGLER_RUN_CONFIG")
    from_file = _config_file(Path(config_file)) if config_file else {}
    values: dict[str, Any] = {}
    for flag, (name, key, parse, _) in _FLAGS.items():
        raw, source = getattr(args, name), flag
        if raw is None:
            raw, source = env.get(key), f"env {key}"
        if raw is None and name in from_file:
            raw, source = from_file[name], f"{config_file}: {name}"
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise StackError(f"{source}={raw!r} is invalid: {exc}") from None
    for name, key in (("database_url", "DATABASE_URL"), ("redis_url", "REDIS_URL"),
                      ("jwt_secret", "JWT_SECRET"), ("dry_run_secret", "DRY_RUN_SECRET")):
        if env.get(key):
            values[name] = env[key]
    config = StackConfig(**values)
    ports = {"gateway": config.listen[1], "admin": config.admin[1], "legacy": config.legacy_port,
             "new": config.new_port}
    if len(set(ports.values())) != len(ports):
        raise StackError(f"two parts would listen on the same port: {ports}; give each its own")
    return config


# config-file keys (nested per side, or flat) -> StackConfig field
_FILE_KEYS = {("legacy", "cmd"): "legacy_cmd", ("legacy", "port"): "legacy_port",
              ("legacy", "health"): "legacy_health", ("new", "cmd"): "new_cmd", ("new", "port"): "new_port",
              ("new", "health"): "new_health"}  # fmt: skip
_FLAT_KEYS = ("routes", "state_dir", "migrations", "listen", "admin", "ready_timeout", "stop_timeout")


def _config_file(path: Path) -> dict[str, str]:
    """The settings a `--config` YAML file gives, as strings keyed by field; unknown keys are errors.
    Relative paths in it are relative to the file's folder."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read the run config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise StackError(f"{path}: expected a mapping of settings, e.g. legacy: {{cmd: ..., port: 3000}}")
    out: dict[str, str] = {}
    for key, value in data.items():
        if key in ("legacy", "new") and isinstance(value, dict):
            for sub, inner in value.items():
                name = _FILE_KEYS.get((key, sub))
                if name is None:
                    raise StackError(f"{path}: {key}.{sub} is not a setting (use cmd, port, health)")
                out[name] = str(inner)
        elif key in _FLAT_KEYS:
            text = str(value)
            if key in ("routes", "state_dir", "migrations") and text != "none":
                text = str((path.parent / text).resolve())
            out[key] = text
        else:
            raise StackError(f"{path}: {key} is not a setting (known: legacy, new, {', '.join(_FLAT_KEYS)})")
    return out


def app_argv(config: StackConfig, side: str) -> list[str]:
    """The argv starting one side: its configured command, or the worked example's."""
    command = config.legacy_cmd if side == "legacy" else config.new_cmd
    port = config.legacy_port if side == "legacy" else config.new_port
    if not command:
        if side == "new":
            return [sys.executable, "-m", "services"]
        node = shutil.which("node")
        if node is None:
            raise StackError("node is not on PATH; install Node.js 20+ (the legacy app needs it)")
        if not (ROOT / "legacy" / "node_modules").is_dir():
            raise StackError("legacy/node_modules is missing; run `make install` (npm ci in legacy/)")
        return [node, str(ROOT / "legacy" / "src" / "server.js")]
    return [arg.replace("{port}", str(port)) for arg in shlex.split(command)]


def migrations_dir(config: StackConfig) -> Path | None:
    """The migrations to apply first: the configured folder, none, or the example's for the example."""
    if config.migrations == "none":
        return None
    if config.migrations:
        return Path(config.migrations)
    if not config.legacy_cmd and not config.new_cmd and (ROOT / "migrations").is_dir():
        return ROOT / "migrations"
    return None


def check_port_free(host: str, port: int, who: str, flag: str) -> None:
    """Fail early, naming the flag to change, when something already listens where a part will."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StackError(f"{who} cannot listen on {host}:{port}: {exc.strerror}. Stop whatever uses "
                             f"that port or pick another with {flag}.") from None


def effective_routes(source: Path, ports: Mapping[str, int], out_dir: Path) -> Path:
    """Return a routes file whose `legacy` / `new` upstreams point at `ports` on 127.0.0.1.

    The user's file is returned untouched when it already does; otherwise a copy under `out_dir`
    is written (atomically, so the gateway's reload watcher never sees half a file) with only the
    upstream URLs changed, keeping every other line where it was so error line numbers still match.
    """
    try:
        text = source.read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read the routes file {source}: {exc}. Check it with "
                         f"`strangler routes check {source}`.") from None
    upstreams = data.get("upstreams") if isinstance(data, dict) else None
    if not isinstance(upstreams, dict):
        raise StackError(f"{source} has no `upstreams:` mapping; see the routes.yaml in the repository")
    changed = text
    for name, port in ports.items():
        spec = upstreams.get(name)
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise StackError(f"{source}: upstreams.{name}.url is missing; `strangler run` starts {name} "
                             f"on 127.0.0.1:{port} and needs that upstream declared")
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port == port:
            continue
        wanted = f"{parts.scheme or 'http'}://127.0.0.1:{port}{parts.path}"
        if changed.count(url) != 1:
            raise StackError(f"{source}: upstreams.{name}.url {url!r} appears more than once; cannot "
                             f"point it at 127.0.0.1:{port} safely. Edit it or start {name} on its port.")
        changed = changed.replace(url, wanted)
    if changed == text:
        return source
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "routes.effective.yaml"
    # The note goes after the last line, not on top, so every line keeps its number for error messages.
    note = f"# Generated by `strangler run` from {source} (upstream ports rewritten); edit that file.\n"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(changed + ("" if changed.endswith("\n") else "\n") + note)
    os.replace(tmp, target)
    return target


@dataclass
class Child:
    """One supervised process: its output is streamed line by line, prefixed with its name."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    cwd: Path = ROOT
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    exited: asyncio.Task[int] | None = None

    async def start(self) -> None:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, limit=1 << 20,
                # Its own process group: a terminal's Ctrl-C reaches only us, and we stop children in order.
                start_new_session=True, preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise StackError(f"cannot start {self.name} ({shlex.join(self.argv)}) in {self.cwd}: "
                             f"{exc.strerror or exc}. Check its command (--{self.name}-cmd).") from None
        self.pump = asyncio.create_task(self._pump(), name=f"pump-{self.name}")
        self.exited = asyncio.create_task(self.proc.wait(), name=f"wait-{self.name}")

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        prefix = f"{self.name:>8} | ".encode()
        writable = True
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line over the 1 MiB limit: its buffered part is dropped, go on
                continue
            if not line:
                return
            if writable:
                try:
                    sys.stdout.buffer.write(prefix + line.rstrip(b"\n") + b"\n")
                    sys.stdout.flush()
                except (BrokenPipeError, ValueError):
                    # Whoever read our output is gone; keep draining so the child never blocks on a full pipe.
                    writable = False

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def signal_group(self, sig: int) -> None:
        """Signal the child's whole process group (workers included), if it still exists."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float) -> str | None:
        """SIGTERM, then SIGKILL after `grace` seconds; return a complaint if it had to be killed."""
        if self.proc is None or self.exited is None:
            return None
        complaint = None
        if self.proc.returncode is None:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
            except TimeoutError:
                complaint = f"{self.name} did not stop within {grace:g}s of SIGTERM and was killed"
                self.signal_group(signal.SIGKILL)
                await self.exited
        # Reap stragglers of its group (e.g. a worker that outlived its supervisor).
        self.signal_group(signal.SIGKILL)
        if self.pump is not None:  # let the last lines of its output through
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.pump, 2.0)
        return complaint
