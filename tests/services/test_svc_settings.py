"""Settings come from the environment; a bad or missing value stops the service naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "DATABASE_URL": "postgresql://u@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "JWT_SECRET": "x" * 32,
    "PORT": "8001",
}


def test_defaults_match_the_contract() -> None:
    """Unset optional variables take the documented defaults."""
    settings = load_settings(GOOD)
    assert settings.redis_prefix == "strangler:" and settings.host == "127.0.0.1"
    assert (settings.db_pool_min, settings.db_pool_max) == (2, 10)
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 1_209_600)
    assert (settings.login_rate_window, settings.login_rate_limit_account, settings.login_rate_limit_ip) == (
        300,
        10,
        100,
    )
    assert settings.trusted_hops == 0 and settings.dry_run_secret is None and settings.test_diff is None


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": ""}, "PORT"),
        ({"DB_POOL_MIN": "20"}, "DB_POOL_MIN"),
        ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX"),
        ({"ACCESS_TOKEN_TTL": "-5"}, "ACCESS_TOKEN_TTL"),
        ({"LOGIN_RATE_LIMIT_IP": "1.5"}, "LOGIN_RATE_LIMIT_IP"),
        ({"TRUSTED_HOPS": "-1"}, "TRUSTED_HOPS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"DRY_RUN_SECRET": "short"}, "DRY_RUN_SECRET"),
        ({"SERVICES_TEST_DIFF": "user.name"}, "SERVICES_TEST_DIFF"),
        ({"SERVICES_TEST_DIFF": "post.title", "SERVICES_TEST_MODE": "1"}, "SERVICES_TEST_DIFF"),
        ({"CORS_ALLOWED_ORIGINS": "https://app.example.com/path"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "*,https://app.example.com"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"}, "CORS_ALLOW_CREDENTIALS"),
        ({"CORS_ALLOW_CREDENTIALS": "yes"}, "CORS_ALLOW_CREDENTIALS"),
        ({"CORS_MAX_AGE": "-1"}, "CORS_MAX_AGE"),
        ({"COMPRESSION_THRESHOLD": "big"}, "COMPRESSION_THRESHOLD"),
        ({"CACHE_MAX_AGE": "-5"}, "CACHE_MAX_AGE"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
    ],
)
def test_bad_values_name_the_variable(changes: dict[str, str], name: str) -> None:
    """Each bad value raises SettingsError whose message starts with the variable's name."""
    with pytest.raises(SettingsError) as info:
        load_settings({**GOOD, **changes})
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")


def test_http_defaults_and_lists() -> None:
    """Compression, caching and metrics defaults; CORS is off until an origin is listed; lists are trimmed."""
    settings = load_settings(GOOD)
    assert (settings.compression_threshold, settings.cache_max_age, settings.metrics_port) == (1024, 60, None)
    assert not settings.cors.enabled
    cors = load_settings({**GOOD, "CORS_ALLOWED_ORIGINS": " https://a.example , http://b:8080,",
                          "CORS_ALLOWED_METHODS": "get, post", "CORS_ALLOW_CREDENTIALS": "TRUE",
                          "METRICS_PORT": "0"}).cors  # fmt: skip
    assert cors.enabled and cors.origins == ("https://a.example", "http://b:8080")
    assert cors.methods == ("GET", "POST") and cors.credentials and cors.max_age == 600
    assert load_settings({**GOOD, "METRICS_PORT": "0"}).metrics_port == 0


def test_test_diff_needs_test_mode() -> None:
    """SERVICES_TEST_DIFF=user.name is accepted only with SERVICES_TEST_MODE=1."""
    settings = load_settings({**GOOD, "SERVICES_TEST_DIFF": "user.name", "SERVICES_TEST_MODE": "1"})
    assert settings.test_diff == "user.name"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"JWT_SECRET": "too short"}, "JWT_SECRET"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"PORT": "x"}, "PORT"),
    ],
)
def test_python_m_services_exits_2_naming_the_variable(changes: dict[str, str], name: str) -> None:
    """`python -m services` with a bad environment exits 2 and its message names the variable."""
    env = {"PATH": os.environ.get("PATH", ""), **GOOD, **changes}
    done = subprocess.run(
        [sys.executable, "-m", "services"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert name in done.stderr and "configuration error" in done.stderr
