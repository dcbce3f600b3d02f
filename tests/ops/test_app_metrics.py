"""Request metrics: hot-path counts (its cost: bench/micro.py), histogram buckets, snapshots summed across
processes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.ops.metrics import (
    BUCKETS,
    RequestCollector,
    RequestStats,
    local_registry,
    merge_snapshots,
    read_snapshots,
    render,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_observe_with_cached_cells_counts_every_call() -> None:
    """Repeated observe() calls on the same keys (the cached-cell path bench/micro.py times) each count."""
    stats = RequestStats()
    keys = [("users-get", "new", 200), ("users-get", "legacy", 200), ("default", "legacy", 404)]
    n = 30000
    for i in range(n):
        route, target, status = keys[i % 3]
        stats.observe(route, target, status, 0.0031)
    assert sum(stats.counts().values()) == n
    got = samples(render(local_registry(stats)).decode())
    for route, target, _status in keys:
        labels = (("le", "+Inf"), ("route", route), ("target", target))
        assert got[("strangler_request_duration_seconds_bucket", labels)] == n / 3


def test_counts_and_cells_keep_their_shapes() -> None:
    """counts is by (route, target, status) and cells by (route, target), whatever the data path caches."""
    stats = RequestStats()
    for target, status in [("new", 200), ("new", 500), ("new", 200), ("legacy", 200)]:
        stats.observe("a", target, status, 0.003)
    assert stats.counts() == {("a", "new", 200): 2, ("a", "new", 500): 1, ("a", "legacy", 200): 1}
    assert set(stats.cells) == {("a", "new"), ("a", "legacy")}
    assert stats.cells[("a", "new")][2] == 3.0  # 0.003 s: the 0.005 bucket, both statuses in one cell
    assert sum(stats.cells[("a", "legacy")][:-1]) == 1.0


def test_counts_is_a_copy_taken_while_requests_go_on() -> None:
    """counts() is a new dict each time (a scrape thread iterates it while the loop keeps observing): later
    requests show in the next copy, not in one already taken, and changing a copy changes nothing."""
    stats = RequestStats()
    stats.observe("a", "new", 200, 0.001)
    first = stats.counts()
    first[("a", "new", 200)] = 99
    stats.observe("a", "new", 200, 0.001)
    stats.observe("b", "legacy", 404, 0.001)
    assert first == {("a", "new", 200): 99}
    assert stats.counts() == {("a", "new", 200): 2, ("b", "legacy", 404): 1}


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """A latency equal to a bucket bound counts in that bucket; buckets are cumulative; +Inf has all."""
    stats = RequestStats()
    stats.observe("r", "new", 200, 0.005)  # exactly a bound
    stats.observe("r", "new", 200, 0.0051)
    stats.observe("r", "new", 500, 99.0)  # above the last bound
    got = samples(render(local_registry(stats)).decode())

    def bucket(le: str) -> float:
        labels = (("le", le), ("route", "r"), ("target", "new"))
        return got[("strangler_request_duration_seconds_bucket", labels)]

    assert bucket("0.0025") == 0
    assert bucket("0.005") == 1
    assert bucket("0.01") == 2
    assert bucket(repr(BUCKETS[-1])) == 2
    assert bucket("+Inf") == 3
    labels = (("route", "r"), ("target", "new"))
    assert got[("strangler_request_duration_seconds_count", labels)] == 3
    assert abs(got[("strangler_request_duration_seconds_sum", labels)] - 99.0101) < 1e-9
    assert got[("strangler_requests_total", (("route", "r"), ("status", "500"), ("target", "new")))] == 1


def test_snapshots_from_several_processes_add_up(tmp_path: Path) -> None:
    """Snapshot files written by two workers are summed by the parent's collector."""
    first, second = RequestStats(), RequestStats()
    second.ident = first.ident + "-other"  # two processes: two files
    for _ in range(3):
        first.observe("items", "legacy", 200, 0.002)
    for _ in range(4):
        second.observe("items", "legacy", 200, 0.02)
    second.observe("items", "new", 502, 0.5)
    first.write_snapshot(tmp_path)
    second.write_snapshot(tmp_path)
    (tmp_path / "requests-torn.json").write_text('{"counts": [')  # a half-written file is skipped
    counts, cells = merge_snapshots(read_snapshots(tmp_path))
    assert counts == {("items", "legacy", 200): 7, ("items", "new", 502): 1}
    assert sum(cells[("items", "legacy")][:-1]) == 7
    assert abs(cells[("items", "legacy")][-1] - (3 * 0.002 + 4 * 0.02)) < 1e-9
    families = list(RequestCollector(lambda: (counts, cells)).collect())
    exposed = {(s.name, s.labels["status"]): s.value for s in families[0].samples}
    assert exposed == {("strangler_requests_total", "200"): 7, ("strangler_requests_total", "502"): 1}


def test_a_rewritten_snapshot_replaces_the_old_one(tmp_path: Path) -> None:
    """A worker's later snapshot replaces its earlier one rather than adding to it."""
    stats = RequestStats()
    stats.observe("a", "new", 200, 0.001)
    stats.write_snapshot(tmp_path)
    stats.observe("a", "new", 200, 0.001)
    stats.write_snapshot(tmp_path)
    counts, _ = merge_snapshots(read_snapshots(tmp_path))
    assert counts == {("a", "new", 200): 2}
    assert len(list(tmp_path.glob("requests-*.json"))) == 1
