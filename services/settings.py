"""Settings of the new service, read once from the environment into a frozen, validated object.

A missing or bad value raises :class:`SettingsError` whose message names the variable, says why it is
wrong and what to set instead; ``python -m services`` prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The test-only planted differences (docs/API.md, Test-only switch): what the rehearsal must catch.
TEST_DIFFS = (
    "user.name", "post.get.title", "post.create.status", "post.create.missing", "post.patch.precision",
)  # fmt: skip
_ORIGIN_RE = re.compile(r"https?://[^/\s,*]+")


class SettingsError(ValueError):
    """An environment variable is missing or invalid; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclass(frozen=True)
class CorsSettings:
    """Cross-origin access (docs/API.md, CORS); no allowed origin means CORS is off."""

    origins: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PATCH", "DELETE")
    headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-Id")
    exposed: tuple[str, ...] = ("X-Request-Id", "Retry-After", "WWW-Authenticate")
    credentials: bool = False
    max_age: int = 600

    def __post_init__(self) -> None:
        if "*" in self.origins and len(self.origins) > 1:
            raise SettingsError("CORS_ALLOWED_ORIGINS", "`*` cannot be combined with other origins")
        if "*" in self.origins and self.credentials:
            raise SettingsError(
                "CORS_ALLOW_CREDENTIALS",
                "cannot be true with CORS_ALLOWED_ORIGINS=* (browsers refuse it); list the origins instead",
            )
        for origin in self.origins:
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise SettingsError(
                    "CORS_ALLOWED_ORIGINS",
                    f"{origin!r} is not an origin; write scheme://host[:port] without a path, e.g. "
                    "https://app.example.com",
                )

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed."""
        return bool(self.origins)


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start (see docs/API.md, Configuration)."""

    database_url: str
    redis_url: str
    jwt_secret: str
    redis_prefix: str = "strangler:"
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_min: int = 2
    db_pool_max: int = 10
    access_token_ttl: int = 900
    refresh_token_ttl: int = 1_209_600
    login_rate_window: int = 300
    login_rate_limit_account: int = 10
    login_rate_limit_ip: int = 100
    trusted_hops: int = 0
    dry_run_secret: str | None = None
    log_level: str = "INFO"
    test_diff: str | None = None
    compression_threshold: int = 1024
    cache_max_age: int = 60
    cors: CorsSettings = field(default_factory=CorsSettings)
    metrics_port: int | None = None
    # The post event stream and WebSocket (services/stream): below a load balancer's 30 s idle timeout.
    stream_heartbeat_s: int = 15
    ws_ping_s: int = 15
    ws_send_timeout_s: int = 10
    stream_history_max: int = 10_000

    def __post_init__(self) -> None:
        # Checked here too, so settings built in code (tests) obey the same rules as the environment.
        if len(self.jwt_secret) < 32:
            raise SettingsError(
                "JWT_SECRET",
                "must be at least 32 characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
            )
        if self.db_pool_min > self.db_pool_max:
            raise SettingsError(
                "DB_POOL_MIN",
                f"{self.db_pool_min} is larger than DB_POOL_MAX "
                f"({self.db_pool_max}); lower DB_POOL_MIN or raise DB_POOL_MAX",
            )


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(name, f"is required; set it to a {schemes[0]}://... URL")
    if urlsplit(value).scheme not in schemes:
        raise SettingsError(name, f"must be a URL with scheme {' or '.join(schemes)}, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int = 2**31 - 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise SettingsError(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value}")
    return value


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in ("true", "false"):
        raise SettingsError(name, f"must be true or false, got {raw!r}")
    return raw == "true"


def _cors(env: Mapping[str, str]) -> CorsSettings:
    base = CorsSettings()
    return CorsSettings(
        origins=_list(env, "CORS_ALLOWED_ORIGINS", ()),
        methods=tuple(m.upper() for m in _list(env, "CORS_ALLOWED_METHODS", base.methods)),
        headers=_list(env, "CORS_ALLOWED_HEADERS", base.headers),
        exposed=_list(env, "CORS_EXPOSED_HEADERS", base.exposed),
        credentials=_bool(env, "CORS_ALLOW_CREDENTIALS", False),
        max_age=_int(env, "CORS_MAX_AGE", 600, 0, 86400),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from `env` (default ``os.environ``); raise SettingsError naming the key."""
    env = os.environ if env is None else env
    secret = env.get("JWT_SECRET", "")
    if not secret:
        raise SettingsError("JWT_SECRET", "is required (at least 32 characters)")
    port_raw = env.get("PORT", "").strip()
    if not port_raw:
        raise SettingsError("PORT", "is required; set the TCP port to listen on, e.g. PORT=8001")
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise SettingsError("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    dry_secret = env.get("DRY_RUN_SECRET") or None
    if dry_secret is not None and len(dry_secret) < 16:
        raise SettingsError("DRY_RUN_SECRET", "must be at least 16 characters (or unset to disable dry run)")
    test_diff = env.get("SERVICES_TEST_DIFF") or None
    if test_diff is not None:
        if test_diff not in TEST_DIFFS:
            raise SettingsError(
                "SERVICES_TEST_DIFF", f"must be one of {', '.join(TEST_DIFFS)}, got {test_diff!r}"
            )
        if env.get("SERVICES_TEST_MODE") != "1":
            raise SettingsError(
                "SERVICES_TEST_DIFF",
                "is a test-only switch; it is refused unless SERVICES_TEST_MODE=1 is also set",
            )
    return Settings(
        database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
        jwt_secret=secret,
        redis_prefix=env.get("REDIS_PREFIX", "strangler:"),
        host=env.get("HOST", "").strip() or "127.0.0.1",
        port=_int(env, "PORT", 0, 0, 65535),
        db_pool_min=_int(env, "DB_POOL_MIN", 2, 0, 1000),
        db_pool_max=_int(env, "DB_POOL_MAX", 10, 1, 1000),
        access_token_ttl=_int(env, "ACCESS_TOKEN_TTL", 900, 1),
        refresh_token_ttl=_int(env, "REFRESH_TOKEN_TTL", 1_209_600, 1),
        login_rate_window=_int(env, "LOGIN_RATE_WINDOW", 300, 1),
        login_rate_limit_account=_int(env, "LOGIN_RATE_LIMIT_ACCOUNT", 10, 1),
        login_rate_limit_ip=_int(env, "LOGIN_RATE_LIMIT_IP", 100, 1),
        trusted_hops=_int(env, "TRUSTED_HOPS", 0, 0, 100),
        dry_run_secret=dry_secret,
        log_level=level,
        test_diff=test_diff,
        compression_threshold=_int(env, "COMPRESSION_THRESHOLD", 1024, 0),
        cache_max_age=_int(env, "CACHE_MAX_AGE", 60, 0, 31_536_000),
        cors=_cors(env),
        metrics_port=_int(env, "METRICS_PORT", -1, 0, 65535) if env.get("METRICS_PORT", "").strip() else None,
        stream_heartbeat_s=_int(env, "STREAM_HEARTBEAT_S", 15, 1, 3600),
        ws_ping_s=_int(env, "WS_PING_S", 15, 1, 3600),
        ws_send_timeout_s=_int(env, "WS_SEND_TIMEOUT_S", 10, 1, 3600),
        stream_history_max=_int(env, "STREAM_HISTORY_MAX", 10_000, 1, 10_000_000),
    )
