"""Settings for `strangler proxy`: parsed once from flags, then `STRANGLER_*` env, then defaults.

Every value lands in one frozen :class:`Settings`. A bad value raises :class:`SettingsError` naming the
flag and the env key it could have come from, so a failed start says exactly what to fix. Where shadow
results go (Redis, PostgreSQL, key prefix) and the dry-run secret are read from the environment only, by
:func:`shadow_env`, in each serving process (they are not in :class:`Settings`, which is handed to
worker processes as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from proxy.ops.admin_auth import check_admin_exposure
from proxy.shadow.store import DEFAULT_PREFIX

LOG_LEVELS = ("debug", "info", "warning", "error")
DRY_RUN_SECRET_KEYS: Final = ("STRANGLER_DRY_RUN_SECRET", "DRY_RUN_SECRET")
T = TypeVar("T")


class SettingsError(ValueError):
    """A flag or env value is invalid; the message names the flag, the env key and the bad value."""


@dataclass(frozen=True)
class Address:
    """A host and port to listen on (port 0 asks the kernel for a free one)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the gateway process needs to start, validated."""

    routes: str = "routes.yaml"
    listen: Address = Address("0.0.0.0", 8080)
    admin: Address = Address("127.0.0.1", 8081)
    workers: int = 1
    trusted_hops: int = 0
    log_level: str = "info"
    access_log: bool = True
    drain_timeout: float = 30.0
    reload_interval: float = 1.0
    health_timeout: float = 1.0
    admin_public: bool = False
    # Data-path limits (see proxy.server.config.GatewaySettings; 0 means no limit).
    idle_timeout: float = 75.0
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    max_body: int = 64 * 1024 * 1024
    max_connections: int = 10000
    # The admin bearer token (env STRANGLER_ADMIN_TOKEN or --admin-token-file); never in argv or logs.
    admin_token: str = field(default="", repr=False)

    def to_json(self) -> str:
        """Serialise for a worker process (the inverse of :meth:`from_json`); workers serve no admin port,
        so the admin token stays in the parent."""
        return json.dumps({**asdict(self), "admin_token": ""})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """Rebuild settings that :meth:`to_json` wrote."""
        raw: dict[str, Any] = json.loads(text)
        raw["listen"] = Address(**raw["listen"])
        raw["admin"] = Address(**raw["admin"])
        return cls(**raw)


def parse_address(text: str) -> Address:
    """Parse ``host:port`` or ``[v6]:port``; raise ValueError with the expected shape."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be between 0 and 65535")
    return Address(host, port)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _byte_size(text: str) -> int:
    """Bytes: an integer, optionally with k, m or g (binary: 1k = 1024), e.g. 65536, 64m."""
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in "kmg" else (raw, "")
    if not number.isdigit():
        raise ValueError("expected a number of bytes, optionally with k, m or g (e.g. 65536, 64m)")
    return int(number) * _SIZE_UNITS[unit]


def _log_level(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return lowered


# field name -> (flag, parser); the env key is STRANGLER_<FIELD upper-cased>.
_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "routes": ("--routes", str),
    "listen": ("--listen", parse_address),
    "admin": ("--admin", parse_address),
    "workers": ("--workers", _positive_int),
    "trusted_hops": ("--trusted-hops", _non_negative_int),
    "log_level": ("--log-level", _log_level),
    "access_log": ("--access-log", _bool),
    "drain_timeout": ("--drain-timeout", _positive_float),
    "reload_interval": ("--reload-interval", _positive_float),
    "health_timeout": ("--health-timeout", _positive_float),
    "admin_public": ("--admin-public", _bool),
    "idle_timeout": ("--idle-timeout", _positive_float),
    "header_timeout": ("--header-timeout", _positive_float),
    "body_timeout": ("--body-timeout", _positive_float),
    "max_body": ("--max-body", _byte_size),
    "max_connections": ("--max-connections", _non_negative_int),
}


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `strangler proxy` flags; each defaults to None so env and defaults can fill in."""
    defaults = Settings()
    helps = {
        "routes": "routes file to serve and watch",
        "listen": "HOST:PORT the gateway listens on",
        "admin": "HOST:PORT of the admin server (/healthz /readyz /routes /metrics)",
        "workers": "worker processes sharing the listening port",
        "trusted_hops": "proxies in front of the gateway trusted for X-Forwarded-For",
        "log_level": "one of " + ", ".join(LOG_LEVELS),
        "access_log": "log one JSON line per request (on/off)",
        "drain_timeout": "seconds in-flight requests get to finish after SIGTERM",
        "reload_interval": "seconds between checks of the routes file for changes",
        "health_timeout": "seconds each upstream gets to answer a readiness check",
        "admin_public": "allow a non-loopback admin address without a token (on/off)",
        "idle_timeout": "seconds a client connection may stay idle between requests",
        "header_timeout": "seconds a client may take to send a request head (then 408)",
        "body_timeout": "seconds from a request head's start to its body's end (then 408)",
        "max_body": "largest request body forwarded, bytes or 10k/64m/1g (0: no limit; routes.yaml "
        "limits.max_body overrides it per route); larger is answered 413",
        "max_connections": "client connections open at once per process (0: no limit); "
        "one more is answered 503",
    }
    for name, (flag, _) in _FIELDS.items():
        env = "STRANGLER_" + name.upper()
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{helps[name]} (env {env}, default {getattr(defaults, name)})",
        )
    parser.add_argument(
        "--admin-token-file",
        default=None,
        metavar="FILE",
        help="file holding the bearer token the admin port requires, except on /healthz and /readyz "
        "(env STRANGLER_ADMIN_TOKEN_FILE; or the token itself in env STRANGLER_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_const",
        const="off",
        help="same as --access-log off",
    )


def settings_from(namespace: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from parsed flags, falling back to `STRANGLER_*` env, then defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, (flag, parse) in _FIELDS.items():
        env_key = "STRANGLER_" + name.upper()
        raw: Any = getattr(namespace, name, None)
        source = flag
        if raw is None:
            raw = env.get(env_key)
            source = f"env {env_key}"
        if raw is None:
            continue
        try:
            values[name] = parse(str(raw))
        except ValueError as exc:
            raise SettingsError(
                f"{source}={raw!r} is invalid: {exc} (set with {flag} or env {env_key})"
            ) from None
    values["admin_token"] = _admin_token(getattr(namespace, "admin_token_file", None), env)
    settings = Settings(**values)
    refusal = check_admin_exposure(settings.admin.host, settings.admin_token, settings.admin_public)
    if refusal is not None:
        raise SettingsError(refusal)
    return settings


def _admin_token(flag_file: str | None, env: Mapping[str, str]) -> str:
    """The admin token from --admin-token-file, env STRANGLER_ADMIN_TOKEN_FILE or STRANGLER_ADMIN_TOKEN."""
    path = flag_file or env.get("STRANGLER_ADMIN_TOKEN_FILE")
    source = "--admin-token-file" if flag_file else "env STRANGLER_ADMIN_TOKEN_FILE"
    if not path:
        token = env.get("STRANGLER_ADMIN_TOKEN", "").strip()
        source = "env STRANGLER_ADMIN_TOKEN"
    else:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{source}={path!r} cannot be read: {exc.strerror or exc}") from None
    if path is not None and not token:
        raise SettingsError(f"{source}: the admin token is empty")
    if token and (len(token) < 16 or any(c.isspace() for c in token)):
        raise SettingsError(f"{source}: the admin token must be at least 16 characters, without spaces")
    return token


@dataclass(frozen=True)
class ShadowEnv:
    """Where shadow results go and the dry-run secret, from the environment.

    ``redis_url`` (REDIS_URL; shadowing is off without it), ``database_url`` (DATABASE_URL; samples are
    off without it), ``prefix`` (STRANGLER_SHADOW_PREFIX, the Redis key prefix) and ``dry_run_secret``
    (STRANGLER_DRY_RUN_SECRET, else DRY_RUN_SECRET; writes are not shadowed without it).
    """

    redis_url: str | None = field(default=None, repr=False)  # URLs and secrets stay out of logs
    database_url: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    dry_run_secret: bytes | None = field(default=None, repr=False)


def dry_run_secret(env: Mapping[str, str] | None = None) -> bytes | None:
    """The shared secret from STRANGLER_DRY_RUN_SECRET or DRY_RUN_SECRET (None: dry run is off)."""
    env = os.environ if env is None else env
    for key in DRY_RUN_SECRET_KEYS:
        if value := env.get(key):
            return value.encode()
    return None


def shadow_env(env: Mapping[str, str] | None = None) -> ShadowEnv:
    """Read :class:`ShadowEnv` from ``env`` (``os.environ`` by default); empty values count as unset."""
    env = os.environ if env is None else env
    return ShadowEnv(
        redis_url=env.get("REDIS_URL") or None,
        database_url=env.get("DATABASE_URL") or None,
        prefix=env.get("STRANGLER_SHADOW_PREFIX", DEFAULT_PREFIX),
        dry_run_secret=dry_run_secret(env),
    )
