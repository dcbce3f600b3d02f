"""The `strangler` command line: subcommands, settings from flags and env, failed starts."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.opshelp import INVALID_ROUTES, ROOT, routes_text

from proxy import cli
from proxy.ops.settings import Address, Settings, SettingsError, add_proxy_arguments, settings_from


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def parse(argv: list[str], env: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser)
    return settings_from(parser.parse_args(argv), env)


def test_help_lists_every_subcommand() -> None:
    """`strangler --help` names proxy, routes, migrate, report and run."""
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("proxy", "routes", "migrate", "report", "run"):
        assert command in result.stdout


def test_proxy_help_lists_the_operational_flags() -> None:
    """`strangler proxy --help` documents each flag with its env key."""
    out = run_cli("proxy", "--help").stdout
    for flag in ("--routes", "--listen", "--admin", "--workers", "--trusted-hops", "--log-level",
                 "--drain-timeout", "--no-access-log", "STRANGLER_WORKERS"):  # fmt: skip
        assert flag in out


def test_flags_override_env_and_env_overrides_defaults() -> None:
    """A flag beats STRANGLER_* env, which beats the default."""
    env = {"STRANGLER_WORKERS": "3", "STRANGLER_LISTEN": "127.0.0.1:9000", "STRANGLER_ACCESS_LOG": "off"}
    settings = parse(["--workers", "2"], env)
    assert settings.workers == 2
    assert settings.listen == Address("127.0.0.1", 9000)
    assert settings.access_log is False
    assert settings.drain_timeout == 30.0
    assert parse(["--no-access-log"], {}).access_log is False
    assert parse([], {}).admin == Address("127.0.0.1", 8081)


def test_bad_values_name_the_flag_or_env_key() -> None:
    """An invalid value is refused with the flag or env key that carried it."""
    with pytest.raises(SettingsError, match=r"--workers='0'.*STRANGLER_WORKERS"):
        parse(["--workers", "0"], {})
    with pytest.raises(SettingsError, match=r"env STRANGLER_LISTEN='nope'.*HOST:PORT"):
        parse([], {"STRANGLER_LISTEN": "nope"})
    with pytest.raises(SettingsError, match=r"--log-level"):
        parse(["--log-level", "loud"], {})


def test_settings_survive_the_trip_to_a_worker() -> None:
    """Settings serialised for a worker come back equal."""
    settings = parse(["--listen", "[::1]:0", "--workers", "4", "--drain-timeout", "2.5"], {})
    assert Settings.from_json(settings.to_json()) == settings


def test_bad_flag_value_exits_2_with_the_reason() -> None:
    """`strangler proxy --workers x` exits 2 and says which flag is wrong."""
    result = run_cli("proxy", "--workers", "x")
    assert result.returncode == 2
    assert "--workers" in result.stderr


def test_invalid_routes_file_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    """A failed start on a bad routes file prints each error as file:line and exits 1."""
    bad = tmp_path / "routes.yaml"
    bad.write_text(INVALID_ROUTES)
    result = run_cli("proxy", "--routes", str(bad), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{bad}:7:" in result.stderr  # `target: nowhere` is on line 7
    assert "fix them" in result.stderr


def test_port_in_use_names_the_address(tmp_path: Path) -> None:
    """A listen port already taken fails the start with exit 1, naming the address and the flag."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("proxy", "--routes", str(routes), "--listen", f"127.0.0.1:{port}",
                         "--admin", "127.0.0.1:0")  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "--listen" in result.stderr


def test_pure_python_aiohttp_is_refused(tmp_path: Path) -> None:
    """With AIOHTTP_NO_EXTENSIONS the gateway refuses to start and says how to fix it."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
    result = run_cli("proxy", "--routes", str(routes), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                     env={"AIOHTTP_NO_EXTENSIONS": "1"})  # fmt: skip
    assert result.returncode == 1
    assert "pure-Python HTTP parser" in result.stderr
    assert "AIOHTTP_NO_EXTENSIONS" in result.stderr


def test_routes_check_delegates_to_the_routes_linter(tmp_path: Path) -> None:
    """`strangler routes check` exits 0 on a valid file and 1 with file:line on an invalid one."""
    good = tmp_path / "good.yaml"
    good.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_ROUTES)
    assert run_cli("routes", "check", str(good)).returncode == 0
    result = run_cli("routes", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:7" in result.stdout + result.stderr


def test_missing_subcommand_module_says_not_available(capsys: pytest.CaptureFixture[str]) -> None:
    """A subcommand whose module is absent prints "not available" and does not raise."""
    assert cli._load("proxy.no_such_feature", "main", "report") is None
    err = capsys.readouterr().err
    assert "strangler report: not available" in err
    assert "proxy.no_such_feature" in err


def test_routes_check_runs_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cli.main(["routes", "check", FILE]) returns the linter's exit code and prints the table."""
    good = tmp_path / "good.yaml"
    good.write_text(routes_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
    assert cli.main(["routes", "check", str(good)]) == 0
    assert "items" in capsys.readouterr().out


TOKEN = "a-long-enough-admin-token-123"


def test_a_public_admin_address_without_a_token_is_refused() -> None:
    """--admin on a non-loopback address needs a token or --admin-public; the error says all three ways."""
    with pytest.raises(SettingsError) as refused:
        parse(["--admin", "0.0.0.0:8081"], {})
    message = str(refused.value)
    assert "0.0.0.0" in message and "STRANGLER_ADMIN_TOKEN" in message and "--admin-public" in message
    assert parse(["--admin", "0.0.0.0:8081", "--admin-public", "on"], {}).admin_public
    assert parse(["--admin", "0.0.0.0:8081"], {"STRANGLER_ADMIN_TOKEN": TOKEN}).admin_token == TOKEN
    for local in ("127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"):
        assert parse(["--admin", local], {}).admin_token == ""


def test_the_admin_token_comes_from_a_file_and_never_reaches_a_worker(tmp_path: Path) -> None:
    """--admin-token-file is read (whitespace trimmed); a short, empty or unreadable token is refused; the
    token is not serialised for workers and not shown in the settings' repr."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = parse(["--admin", "10.0.0.1:8081", "--admin-token-file", str(token_file)], {})
    assert settings.admin_token == TOKEN
    assert TOKEN not in settings.to_json() and TOKEN not in repr(settings)
    assert Settings.from_json(settings.to_json()).admin_token == ""
    for bad_env in ({"STRANGLER_ADMIN_TOKEN": "short"}, {"STRANGLER_ADMIN_TOKEN": "has a space in it, see"},
                    {"STRANGLER_ADMIN_TOKEN_FILE": str(tmp_path / "missing")}):
        with pytest.raises(SettingsError, match="STRANGLER_ADMIN_TOKEN"):
            parse([], bad_env)
    token_file.write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        parse(["--admin-token-file", str(token_file)], {})


def test_public_admin_without_token_exits_2() -> None:
    """`strangler proxy --admin 0.0.0.0:0` refuses to start (exit 2) and says how to fix it."""
    result = run_cli("proxy", "--admin", "0.0.0.0:0", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "STRANGLER_ADMIN_TOKEN" in result.stderr
