"""`strangler run`'s parts without processes: configuration from flags/env, the effective routes file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.devstack.parts import StackError, effective_routes, parse_config
from proxy.routing.table import load_routes

ROOT = Path(__file__).resolve().parents[2]


def test_config_defaults_flags_and_env() -> None:
    """Flags beat env, env beats defaults, and secrets are generated when not given."""
    cfg = parse_config(["--listen", "127.0.0.1:9090", "--new-port", "9001"],
                       {"STRANGLER_LISTEN": "127.0.0.1:7070", "LEGACY_PORT": "9002", "REDIS_URL": "redis://x/0"})
    assert cfg.listen == ("127.0.0.1", 9090) and cfg.new_port == 9001 and cfg.legacy_port == 9002
    assert cfg.admin == ("127.0.0.1", 8081) and cfg.redis_url == "redis://x/0" and cfg.database_url is None
    assert len(cfg.jwt_secret) >= 32 and cfg.jwt_secret != parse_config([], {}).jwt_secret
    assert parse_config([], {"JWT_SECRET": "s" * 40}).jwt_secret == "s" * 40


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["--listen", "8080"], {}, "--listen='8080' is invalid"),
    ([], {"NEW_PORT": "70000"}, "env NEW_PORT='70000' is invalid"),
    (["--legacy-port", "8000"], {}, "same port"),
    (["--ready-timeout", "0"], {}, "--ready-timeout='0' is invalid"),
])
def test_config_errors_name_the_setting(argv: list[str], env: dict[str, str], needle: str) -> None:
    """A bad flag or env value is refused with a message naming it."""
    with pytest.raises(StackError, match=re.escape(needle)):
        parse_config(argv, env)


def test_effective_routes_rewrites_only_the_upstream_urls(tmp_path: Path) -> None:
    """Other ports give a copy with the same lines except the two URLs; it loads as a valid table."""
    source = ROOT / "routes.yaml"
    out = effective_routes(source, {"legacy": 13000, "new": 18000}, tmp_path)
    assert out.parent == tmp_path
    before, after = source.read_text().splitlines(), out.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    assert len(changed) == 2 and len(after) == len(before) + 1  # plus the trailing "generated" comment
    table = load_routes(out)
    assert (table.upstreams["legacy"].port, table.upstreams["new"].port) == (13000, 18000)
    assert len(table.routes) == len(load_routes(source).routes)


def test_effective_routes_keeps_the_users_file_when_ports_match(tmp_path: Path) -> None:
    """With the ports routes.yaml already names, the user's own file is used and nothing is written."""
    table = load_routes(ROOT / "routes.yaml")
    ports = {name: table.upstreams[name].port for name in ("legacy", "new")}
    assert effective_routes(ROOT / "routes.yaml", ports, tmp_path) == ROOT / "routes.yaml"
    assert list(tmp_path.iterdir()) == []


def test_effective_routes_refuses_a_file_without_upstreams(tmp_path: Path) -> None:
    """A routes file that does not declare the legacy upstream is refused naming the key."""
    bad = tmp_path / "routes.yaml"
    bad.write_text("upstreams:\n  new: {url: 'http://127.0.0.1:8000'}\nroutes: []\n")
    with pytest.raises(StackError, match=r"upstreams\.legacy\.url is missing"):
        effective_routes(bad, {"legacy": 3000, "new": 8000}, tmp_path / "out")
