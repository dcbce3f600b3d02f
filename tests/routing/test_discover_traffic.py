"""`strangler routes discover --access-log`: templates and counts inferred from generated access logs."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.ops.accesslog import AccessLog
from proxy.routing.table import load_routes
from proxy.routing.traffic import Traffic, infer_templates, is_value, read_traffic
from proxy.server.gateway import AccessRecord

ORDERS_APP = Path(__file__).resolve().parent / "orders_app" / "src" / "app.js"
TAGS = [
    "python",
    "rust",
    "go",
    "java",
    "kotlin",
    "swift",
    "ruby",
    "perl",
    "php",
    "lua",
    "zig",
    "nim",
    "ocaml",
    "haskell",
    "elixir",
    "erlang",
    "clojure",
    "scala",
    "dart",
    "julia",
    "fortran",
    "cobol",
]


def _requests() -> list[tuple[str, str]]:
    """The requests of the generated logs: (method, target as the client sent it)."""
    out = [("GET", f"/api/v1/users/{n}?expand=posts") for n in range(1, 31)]
    out += [("GET", f"/api/v1/users/{uuid.UUID(int=n)}") for n in range(5)]
    out += [("GET", "/api/v1/users/me")] * 3
    out += [("PATCH", "/api/v1/users/5"), ("DELETE", "/api/v1/users/6")]
    out += [("GET", "/posts/my-first-post-42"), ("GET", "/posts/how-we-moved-to-python")]
    out += [("GET", "/blobs/5f2b9c0e1a7d")]
    out += [("GET", f"/tags/{tag}") for tag in TAGS]
    out += [("GET", "/health")] * 4
    return out


def _write_gateway_log(path: Path, requests: list[tuple[str, str]]) -> None:
    """Write the requests with the gateway's own AccessLog, as `strangler proxy` does."""

    async def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        log = AccessLog(fd, interval=60)
        for i, (method, target) in enumerate(requests):
            log(AccessRecord(f"r{i}", method, target, "default", "legacy", 200, 0.001, 0, 10, "127.0.0.1"))
        assert log.drain()
        log.close()

    asyncio.run(write())


def _combined(method: str, target: str) -> str:
    return f'10.0.0.1 - - [06/Dec/2026:10:00:00 +0000] "{method} {target} HTTP/1.1" 200 512 "-" "curl/8"'


WANT = {
    "/api/v1/users/{id}": Counter({"GET": 35, "PATCH": 1, "DELETE": 1}),
    "/tags/{id}": Counter({"GET": 22}),
    "/health": Counter({"GET": 4}),
    "/api/v1/users/me": Counter({"GET": 3}),
    "/posts/{id}": Counter({"GET": 2}),
    "/blobs/{id}": Counter({"GET": 1}),
}


def test_segments_that_look_like_values() -> None:
    """Numbers, UUIDs, hex, long tokens and slugs are values; names, versions and short words are not."""
    values = [
        "42",
        str(uuid.uuid4()),
        "5f2b9c0e1a7d",
        "01HZX3K9Q7RJ5T2V8W4Y6M0N1P",
        "my-post-42",
        "how-we-moved-to-python",
    ]
    names = ["users", "v1", "me", "refresh-tokens", "openapi.json", "deadbeef", "health-check"]
    assert [s for s in values if not is_value(s)] == []
    assert [s for s in names if is_value(s)] == []


def test_gateway_json_log_and_combined_log_infer_the_same_templates(tmp_path: Path) -> None:
    """Both formats give templates with requests per method; refused paths and junk lines are skipped."""
    requests = _requests()
    log = tmp_path / "access.jsonl"
    _write_gateway_log(log, [*requests, ("GET", "/a//b")])
    with log.open() as lines:
        traffic = read_traffic([*lines, "not a request\n", '{"method": "get!", "path": "/x"}\n'])
    assert (traffic.formats, traffic.requests, traffic.skipped) == ({"json"}, len(requests), 3)
    assert infer_templates(traffic) == WANT
    combined = read_traffic(_combined(m, t) for m, t in requests)
    assert combined.formats == {"combined"} and infer_templates(combined) == WANT
    assert next(iter(infer_templates(combined))) == "/api/v1/users/{id}"  # the busiest first


def test_max_literals_keeps_a_small_set_of_names() -> None:
    """Under the threshold the tag names stay literal routes; over it they become one parameter."""
    traffic = read_traffic(_combined("GET", f"/tags/{tag}") for tag in TAGS[:5])
    assert sorted(infer_templates(traffic)) == sorted(f"/tags/{t}" for t in TAGS[:5])
    assert list(infer_templates(traffic, max_literals=4)) == ["/tags/{id}"]


def test_draft_from_traffic_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--access-log` alone: one route per template and method, each with its count; it loads."""
    log = tmp_path / "access.jsonl"
    _write_gateway_log(log, _requests())
    out = tmp_path / "draft.yaml"
    assert main(["routes", "discover", "--access-log", str(log), "--out", str(out)]) == 0
    table = load_routes(out)
    assert {(",".join(sorted(r.methods or ())), r.path) for r in table.routes} == {
        ("GET,HEAD", "/api/v1/users/{id}"),
        ("PATCH", "/api/v1/users/{id}"),
        ("DELETE", "/api/v1/users/{id}"),
        ("GET,HEAD", "/tags/{id}"),
        ("GET,HEAD", "/health"),
        ("GET,HEAD", "/api/v1/users/me"),
        ("GET,HEAD", "/posts/{id}"),
        ("GET,HEAD", "/blobs/{id}"),
    }
    text = out.read_text()
    assert "# traffic: 35 requests (GET 35)" in text
    assert f"Traffic from {log}: {len(_requests())} requests (0 lines skipped" in text
    assert "traffic per route:" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_express_and_traffic_together_mark_coverage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With both, each route says what traffic it saw, and traffic no route covers is listed."""
    lines = [_combined("GET", f"/api/v2/orders/{n}") for n in range(10)]
    lines += [_combined("PATCH", "/api/v2/orders/7/lines/3"), _combined("HEAD", "/status")]
    lines += [_combined("GET", f"/api/v2/customers/{n}/addresses") for n in range(3)]
    lines += [_combined("GET", "/legacy-report-2024")]  # a regex route of the app: not in the draft
    log = tmp_path / "nginx.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "draft.yaml"
    argv = ["routes", "discover", "--express", str(ORDERS_APP), "--access-log", str(log), "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    route_block = text.split("  - name: get-api-v2-orders-orderId\n")[0].rsplit(
        "  # GET /api/v2/orders/:", 1
    )[1]
    assert "# traffic: 10 requests (GET 10)" in route_block
    assert "traffic: 1 request (PATCH 1)" in text and "traffic: 1 request (HEAD 1)" in text
    assert text.count("traffic: none seen") == 17
    assert "#   /api/v2/customers/{id}/addresses: 3 requests (GET 3)" in text
    assert "#   /{id}: 1 request (GET 1)" in text  # /legacy-report-2024 looks like a slug with a digit
    err = capsys.readouterr().err
    assert "not covered by any route: /api/v2/customers/{id}/addresses: 3 requests" in err
    assert len(load_routes(out).routes) == 20
    assert Traffic().requests == 0
