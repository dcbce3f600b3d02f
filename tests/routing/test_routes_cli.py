"""`strangler routes check FILE`: exit codes, the resolved table, and every error as FILE:LINE: KEY: MSG."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from proxy.routing.cli import check

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:3000"}
  new: {url: "http://127.0.0.1:8000", pool_size: 8}
routes:
  - {name: catch, match: {path: "/api/{rest*}"}, target: legacy}
  - {name: users-get, match: {methods: [GET], path: "/api/v1/users/{id}"}, target: new,
     shadow: {sample: 0.1, timeout: 2}}
  - {name: users-write, match: {methods: [PATCH, DELETE], path: "/api/v1/users/{id}"}, target: legacy,
     shadow: {sample: 0.5, writes: true}}
"""


def run_check(path: Path | str) -> tuple[int, str]:
    """Run check() into a buffer; return (exit code, output)."""
    out = io.StringIO()
    code = check(str(path), out=out)
    return code, out.getvalue()


def test_good_file_prints_table_in_priority_order(tmp_path: Path) -> None:
    """A valid file exits 0 and prints upstreams, then routes most specific first, then the default."""
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    code, out = run_check(path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: ok, 3 routes (+ default), sha256 ")
    assert lines[1] == "upstream legacy: http://127.0.0.1:3000 (connect 1s, timeout 30s, pool 64)"
    assert lines[2] == "upstream new: http://127.0.0.1:8000 (connect 1s, timeout 30s, pool 8)"
    table = [line.split() for line in lines[4:]]
    assert table[0] == ["#", "name", "methods", "path", "target", "shadow"]
    assert table[1] == [
        "1",
        "users-get",
        "GET,HEAD",
        "/api/v1/users/{id}",
        "new",
        "0.1",
        "of",
        "reads,",
        "timeout",
        "2s",
    ]
    assert table[2][:5] == ["2", "users-write", "DELETE,PATCH", "/api/v1/users/{id}", "legacy"]
    assert " ".join(table[2][5:]) == "0.5 of reads+writes, timeout 5s"
    assert table[3] == ["3", "catch", "*", "/api/{rest*}", "legacy", "-"]
    assert table[4] == ["-", "default", "*", "/{rest*}", "legacy", "-"]
    assert len(table) == 5


def test_bad_file_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    """An invalid file exits 1 and prints each error as FILE:LINE: KEY: MESSAGE, then a count."""
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD.replace("target: new,", "target: nwe,").replace("pool_size: 8", "pool_size: 0"))
    code, out = run_check(path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:3: upstreams.new.pool_size: must be an integer from 1 to 10000; got 0",
        f"{path}:6: routes[1].target: unknown upstream 'nwe' "
        "(known: legacy, new; or auto, for the autopilot's rollout plan)",
        f"{path}: 2 errors; the file was not loaded",
    ]


def test_missing_file_exits_1(tmp_path: Path) -> None:
    """A file that cannot be read exits 1 with a message naming it."""
    code, out = run_check(tmp_path / "absent.yaml")
    assert code == 1
    assert out.startswith(f"{tmp_path / 'absent.yaml'}:0: file: cannot read the routes file")
    assert out.endswith("1 error; the file was not loaded\n")


def test_shipped_file_checks_clean() -> None:
    """The repository's routes.yaml passes the check."""
    code, out = run_check(ROOT / "routes.yaml")
    assert code == 0, out
    assert "users-get" in out and "default" in out


def test_strangler_routes_check_command(tmp_path: Path) -> None:
    """The installed `strangler routes check` command exits 0 / 1 with the same output."""
    strangler = Path(sys.executable).parent / "strangler"
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("/api/{rest*}", "/api/{rest*}/x"))
    ok = subprocess.run([strangler, "routes", "check", good], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == run_check(good)[1]
    failed = subprocess.run([strangler, "routes", "check", bad], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1
    assert f"{bad}:5: routes[0].match.path: path template '/api/{{rest*}}/x': a wildcard" in failed.stdout
