"""/metrics on METRICS_PORT: the same metric names and labels on both services, and what they count."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from contract_kit import Account, Api
from contract_stack import Stack
from prometheus_client.parser import text_string_to_metric_families

from proxy.devstack.embedded import free_port

NAMES = {
    "http_requests", "http_request_duration_seconds", "db_pool_size", "db_pool_in_use", "db_pool_waiting",
    "db_pool_max", "redis_errors", "service_info",
}  # fmt: skip
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[httpx.Response, Samples]:
    """GET /metrics; every sample by (name, labels)."""
    r = httpx.get(url, timeout=10.0)
    assert r.status_code == 200, r.text
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    return r, samples


def shape(text: str) -> set[tuple[str, str, str, frozenset[str]]]:
    """(family, type, sample name, label names) of every sample: what a dashboard depends on."""
    return {
        (family.name, family.type, s.name, frozenset(s.labels))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_both_services_expose_the_same_names_and_labels(stack: Stack, legacy: Api, new: Api) -> None:
    """After the same requests, both /metrics list the same families, types, samples and label names."""
    texts = {}
    for api in (legacy, new):
        owner = stack.shared_account(api.name)
        assert api.get(f"/api/v1/users/{owner.id}").status_code == 200
        assert api.get("/no/such/route").status_code == 404
        r, _ = scrape(stack.start(api.name).metrics_url)
        assert r.headers["content-type"].startswith("text/plain"), r.headers
        texts[api.name] = r.text
    assert {f.name for f in text_string_to_metric_families(texts["legacy"])} == NAMES
    assert shape(texts["new"]) == shape(texts["legacy"])


def test_requests_are_counted_by_route_template_method_and_status(
    stack: Stack, api: Api, reader: Account
) -> None:
    """Each answered request adds one to its (route template, method, status) and to its latency histogram."""
    url = stack.start(api.name).metrics_url
    _, before = scrape(url)
    path = f"/api/v1/users/{reader.id}"
    assert api.get(path).status_code == 200
    assert api.request("HEAD", path).status_code == 200
    assert api.get("/api/v1/users/0").status_code == 404
    assert api.get("/no/such/route").status_code == 404
    _, after = scrape(url)
    user = "/api/v1/users/{id}"
    for route, method, status in ((user, "GET", "200"), (user, "HEAD", "200"), (user, "GET", "404"),
                                  ("<unmatched>", "GET", "404")):  # fmt: skip
        labels = {"route": route, "method": method, "status": status}
        delta = value(after, "http_requests_total", **labels) - value(before, "http_requests_total", **labels)
        assert delta == 1, (labels, delta)
    count = "http_request_duration_seconds_count"
    assert value(after, count, route=user, method="GET") - value(before, count, route=user, method="GET") == 2
    inf = value(after, "http_request_duration_seconds_bucket", route=user, method="GET", le="+Inf")
    assert inf == value(after, count, route=user, method="GET")


def test_pool_gauges_and_service_info(stack: Stack, api: Api) -> None:
    """The pool gauges describe the configured pool (DB_POOL_MAX=5); service_info names the service."""
    assert api.get("/health/ready").status_code == 200  # the pool has opened a connection
    _, samples = scrape(stack.start(api.name).metrics_url)
    assert value(samples, "db_pool_max") == 5
    size = value(samples, "db_pool_size")
    assert 1 <= size <= 5
    assert 0 <= value(samples, "db_pool_in_use") <= size
    assert value(samples, "db_pool_waiting") == 0
    assert value(samples, "service_info", service=api.name, version="1.0.0") == 1


@pytest.fixture(params=["legacy", "new"])
def redisless(request: pytest.FixtureRequest, stack: Stack) -> Iterator[tuple[str, str]]:
    """One service started against a Redis port nobody listens on: (API url, metrics url)."""
    with stack.variant(request.param, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0") as run:
        yield run.base_url, run.metrics_url


def test_failed_redis_commands_are_counted(redisless: tuple[str, str]) -> None:
    """With Redis unreachable, readiness fails and redis_errors_total counts the failed commands."""
    base, metrics_url = redisless
    _, before = scrape(metrics_url)
    assert value(before, "redis_errors_total") == 0
    r = httpx.get(f"{base}/health/ready", timeout=10.0)
    assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("failing"), r.text
    _, after = scrape(metrics_url)
    assert value(after, "redis_errors_total") >= 1
