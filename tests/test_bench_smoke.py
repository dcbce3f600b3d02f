"""The benchmarks' moving parts without load: wrk output parsing, Lua scripts, generated configs, verdicts."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from proxy.routing.table import parse_routes

# bench/ is a directory of scripts, not an installed package: `python -m pytest` finds it through the
# current directory, a bare `pytest` does not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import compiled_cpu, micro, timing, upstream
from bench.gateway import data_path_checks, worker_rss
from bench.gw_targets import NGINX_CONF, ROUTES, start_upstream
from bench.harness import Fleet, Variant
from bench.report import Check
from bench.wrk import Run, Summary, WrkParseError, paired_ratios, parse_wrk, wrk_command

RECORDED = """\
Running 10s test @ http://127.0.0.1:40123/api/v1/users/1
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.18ms    2.57ms  22.33ms   92.86%
    Req/Sec    19.99k     4.67k   27.85k    80.00%
  Latency Distribution
     50%   61.00us
     75%    1.39ms
     90%    3.08ms
     99%    1.02s
  200600 requests in 10.01s, 27.00MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 17
Requests/sec:  20039.88
Transfer/sec:      2.68MB
"""


def test_parse_wrk_reads_throughput_percentiles_and_errors() -> None:
    """A recorded wrk --latency report parses to req/s, request count, ms percentiles and error counts."""
    run = parse_wrk(RECORDED)
    assert (run.rps, run.requests) == (20039.88, 200600)
    assert (run.p50_ms, run.p75_ms, run.p90_ms, run.p99_ms) == pytest.approx((0.061, 1.39, 3.08, 1020.0))
    assert (run.non2xx, run.socket_errors, run.errors) == (17, 6, 23)


def test_data_path_checks_are_issue_13s_targets_from_one_run() -> None:
    """Throughput and CPU against nginx's, the shadowed ratio and what shadowing adds in microseconds, p99
    against nginx's, the unshadowed worker's RSS; SKIP for what the run did not measure."""
    nginx = Summary("nginx", [Run(100, 1000, 1, 1, 1, 1.0, cpu_s=0.010, round=0)])  # 10 us a request
    mine = Summary("strangler", [Run(85, 850, 1, 1, 1, 1.2, cpu_s=0.0119, round=0)])  # 14 us
    shadow = Summary("strangler+shadow", [Run(60, 600, 1, 1, 1, 1.5, cpu_s=0.0132, round=0)])  # 22 us
    summaries = {"nginx": nginx, "strangler": mine, "strangler+shadow": shadow}
    got = {c.name: c for c in data_path_checks(summaries, {"strangler": 61.5, "strangler+shadow": 70.25})}
    rss = got["strangler worker RSS after its rounds"]
    assert (rss.value, rss.verdict) == (61.5, "FAIL")
    line = rss.line()
    assert "61.5 MiB" in line and "target <= 60.0 MiB" in line and "shadowing worker 70.2" in line
    assert data_path_checks(summaries, {"strangler": 58.0})[-1].verdict == "PASS"
    assert got["strangler / nginx throughput"].value == pytest.approx(0.85)
    assert got["strangler / nginx throughput"].verdict == "PASS"
    assert got["strangler CPU per request / nginx's"].value == pytest.approx(1.4)
    assert got["strangler CPU per request / nginx's"].verdict == "FAIL"
    assert got["shadowed / unshadowed throughput"].value == pytest.approx(60 / 85)
    assert got["shadowed / unshadowed throughput"].verdict == "FAIL"
    added = got["CPU every shadowed GET adds"]
    assert (added.value, added.verdict) == (pytest.approx(8.0), "PASS")
    assert "8.0 us" in added.line() and "target <= 8.0 us" in added.line()
    assert got["strangler p99 / nginx p99"].value == pytest.approx(1.2)
    alone = {c.name: c.verdict for c in data_path_checks({"strangler": mine})}
    assert set(alone.values()) == {"SKIP"} and len(alone) == 6


def test_worker_rss_reads_each_strangler_worker_and_leaves_out_a_dead_one() -> None:
    """A running worker's RSS is read (anchors are not); a worker that is gone has none: left out, so its
    check says "not measured" instead of passing with 0 MiB."""
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid has no /proc entry (or, reused, not this variant's worker for long)
    try:
        rss = worker_rss([Variant("strangler", 0, alive.pid), Variant("strangler+shadow", 0, gone.pid),
                          Variant("nginx", 0, alive.pid)])  # fmt: skip
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait()
    assert list(rss) == ["strangler"] and rss["strangler"] > 1.0
    assert data_path_checks({}, rss)[-1].value == rss["strangler"]


def test_parse_wrk_refuses_a_report_without_results() -> None:
    """wrk's output for a refused connection is an error, not a zero-throughput run."""
    with pytest.raises(WrkParseError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_summary_and_checks_fold_rounds_as_documented() -> None:
    """Means for throughput, medians for percentiles, CPU over requests, ratios paired by round."""
    fast = Summary("a", [Run(200, 2000, 1, 1, 1, 4, cpu_s=0.02, round=0),
                         Run(100, 1000, 1, 1, 1, 8, cpu_s=0.01, round=1)])
    slow = Summary("b", [Run(100, 1000, 2, 2, 2, 2, round=0), Run(100, 1000, 2, 2, 2, 6, round=1)])
    assert (fast.rps_mean, fast.rps_min, fast.rps_max, fast.p99_ms) == (150, 100, 200, 6)
    assert fast.cpu_us_per_request == pytest.approx(10.0)
    assert slow.cpu_us_per_request is None
    assert paired_ratios(fast, slow, lambda r: r.rps) == [2.0, 1.0]
    assert Check("t", 1.5, ">=", 1.5).verdict == "PASS"
    assert Check("t", 1.49, ">=", 1.5).verdict == "FAIL"
    assert Check("p99", 1.6, "<=", 1.5).verdict == "FAIL"
    assert Check("n/a", None, ">=", 1.0).verdict == "SKIP"


def test_gateway_routes_template_is_a_valid_table() -> None:
    """The routes the gateway benchmark writes load, route the benchmark path, and shadow only when asked."""
    plain = parse_routes(ROUTES.format(legacy=9001, new=9002, shadow=""), "bench.yaml")
    shadowed = parse_routes(ROUTES.format(legacy=9001, new=9002, shadow="    shadow: {sample: 1.0}\n"),
                            "bench.yaml")
    for table in (plain, shadowed):
        match = table.match("GET", "/api/v1/users/1")
        assert (match.route.name, match.route.target) == ("users-get", "legacy")
        assert table.upstreams["new"].port == 9002
    assert plain.match("GET", "/api/v1/users/1").route.shadow is None
    spec = shadowed.match("GET", "/api/v1/users/1").route.shadow
    assert spec is not None and spec.sample == 1.0


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None,
                    reason="nginx is not installed (the gateway benchmark installs nginx-light)")
def test_nginx_config_template_passes_nginx_t(tmp_path: Path) -> None:
    """The generated nginx.conf is accepted by `nginx -t`."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, upstream=9001, port=9004))
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    done = subprocess.run([nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


Seen = list[tuple[str, str, dict[str, str], bytes]]  # method, path, headers, body of the first requests
Recorded = tuple[int, Seen]  # the recording server's port and what it saw


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[Seen] = []
    lock = threading.Lock()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            if len(self.seen) < 5:
                self.seen.append((self.command, self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[Recorded]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _run_script(port: int, script: str, *args: str) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (the benchmarks install it with apt)")
    cmd = wrk_command(f"http://127.0.0.1:{port}/", connections=1, duration=1, script=script, script_args=args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def test_users_script_requests_random_ids_in_range(recorder: Recorded) -> None:
    """users_random.lua asks for GET /api/v1/users/{id} with ids inside the seeded range."""
    port, seen = recorder
    _run_script(port, "users_random.lua", "5", "9")
    assert len(seen) == 5
    for method, path, _, _ in seen:
        assert method == "GET" and path.startswith("/api/v1/users/")
        assert 5 <= int(path.rsplit("/", 1)[1]) <= 9


def test_posts_script_posts_json_with_the_bearer_token(recorder: Recorded) -> None:
    """posts_create.lua sends an authenticated JSON POST /api/v1/posts with title and body."""
    port, seen = recorder
    _run_script(port, "posts_create.lua", "tok.en.sig")
    method, path, headers, body = seen[0]
    assert (method, path) == ("POST", "/api/v1/posts")
    assert headers["Authorization"] == "Bearer tok.en.sig"
    assert headers["Content-Type"] == "application/json"
    assert body.startswith(b'{"title":"bench post","body":"')


def test_login_script_logs_in_as_seeded_users(recorder: Recorded) -> None:
    """login.lua posts a seeded user's email and the shared password as JSON."""
    port, seen = recorder
    _run_script(port, "login.lua", "3", "3", "pw-123")
    method, path, headers, body = seen[0]
    assert (method, path, headers["Content-Type"]) == ("POST", "/api/v1/auth/login", "application/json")
    assert body == b'{"email":"user3@bench.example","password":"pw-123"}'


def test_micro_bench_prints_every_figure_and_checks_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench/micro.py measures the three hot paths the unit tests no longer time; bounds only with --check."""
    assert micro.main(["--calls", "200"]) == 0
    out = capsys.readouterr().out
    for name in ("access line", "metrics observe", "shadow submit, queue full"):
        assert name in out and "µs/call" in out
    figure = micro.Figure("x", seconds=2.0, bound=1.0)
    assert figure.verdict == "FAIL"


async def test_timing_bench_gateway_figure_runs() -> None:
    """bench/timing.py's refused-upstream figure runs against a real gateway (it raises unless a 502)."""
    assert await timing.refused_502() > 0  # the value itself is the benchmark's to judge


def test_compiled_cpu_bench_measures_both_builds(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/compiled_cpu.py runs a real gateway of each build (as built, and STRANGLER_PURE_PYTHON=1)."""
    argv = ["--rounds", "1", "--requests", "2000", "--warmup", "50", "--connections", "2"]
    assert compiled_cpu.main(argv) == 0
    out = capsys.readouterr().out
    assert "compiled  CPU us/request: mean" in out and "pure      CPU us/request: mean" in out
    assert "compiled / pure CPU per request:" in out


def test_compiled_cpu_bench_compares_another_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    """With --against, the other build is that checkout's as built (here this checkout again), not pure."""
    root = Path(compiled_cpu.__file__).resolve().parent.parent
    argv = ["--rounds", "1", "--requests", "2000", "--warmup", "50", "--connections", "2"]
    argv += ["--against", str(root)]
    assert compiled_cpu.main(argv) == 0
    out = capsys.readouterr().out
    assert "against   CPU us/request: mean" in out and "pure " not in out
    assert f"compiled / {root} (as built) CPU per request:" in out


STOPPED_BY_ID = """\
import signal, sys
from pathlib import Path
from bench.harness import Fleet, Variant
fleet = Fleet(Path(sys.argv[1]))
try:
    print(fleet.start("sleeper", ["sleep", "120"]), flush=True)
    signal.pause()  # until the test's SIGTERM
finally:
    fleet.close()
    print("closed", flush=True)
"""


def test_a_benchmark_stopped_by_its_id_stops_its_children(tmp_path: Path) -> None:
    """SIGTERM to a benchmark runs its `finally`: the Fleet's children stop with it, none is left behind."""
    root = Path(__file__).resolve().parent.parent
    bench = subprocess.Popen(
        [sys.executable, "-c", STOPPED_BY_ID, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert bench.stdout is not None
        child = int(bench.stdout.readline())
        bench.terminate()
        out, _ = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
        if child and bench.returncode != 143:  # its Fleet did not stop the sleeper: stop it here
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
    assert bench.returncode == 143 and out.strip() == "closed"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # stopped and reaped by the Fleet's close


def test_a_fleet_gives_sigterm_back_when_closed(tmp_path: Path) -> None:
    """A Fleet made in a test process leaves SIGTERM's default action as it found it once closed."""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    fleet = Fleet(tmp_path)
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    fleet.close()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize("express", [False, True])
def test_bench_upstream_answers_with_the_head_asked_for(tmp_path: Path, express: bool) -> None:
    """bench/upstream.py's answer: the minimal two-header head, or an Express app's seven (--express-head)."""

    fleet = Fleet(tmp_path)
    try:
        port, _ = start_upstream(fleet, "upstream", express)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/users/1")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    finally:
        fleet.close()
    assert (resp.status, body) == (200, upstream.BODY)
    names = [name.lower() for name, _ in resp.getheaders()]
    express_head = "x-powered-by content-type content-length etag date connection keep-alive".split()
    assert names == (express_head if express else ["content-type", "content-length"])
