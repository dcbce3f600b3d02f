"""The routes model's value objects copy, deep-copy and pickle alike whether compiled (mypyc) or not."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from proxy.routing import model
from proxy.routing.model import (
    BreakerSpec,
    CompareRules,
    ConfigError,
    FallbackSpec,
    Gate,
    Match,
    RollbackTriggers,
    RolloutPlan,
    Route,
    ShadowSettings,
    ShadowSpec,
    StickyKey,
    UpstreamSpec,
)
from proxy.routing.table import parse_routes

ROUTE = Route(
    name="users-get",
    methods=frozenset({"GET"}),  # one: a copied set of two may iterate (and repr) in another order
    path="/api/v1/users/{id}",
    target="auto",
    shadow=ShadowSpec(sample=0.5, writes=False, timeout=2.0),
    compare=CompareRules(ignore=("$.uptime_s",), sets=("$.tags",), tolerance=0.01, generated=("$.id",)),
    line=7,
    max_body=1024,
    rollout=RolloutPlan(
        stages=(0, 25, 100),
        sticky=StickyKey("header", "x-user"),
        testers=("x-tester", "yes"),
        gate=Gate(min_s=30.0),
        rollback=RollbackTriggers(error_rate=0.1),
    ),
    fallback=FallbackSpec(timeout=1.5),
    breaker=BreakerSpec(consecutive=3),
)
# One of each value object of the module, fields away from their defaults where that is possible.
VALUES: list[Any] = [
    ConfigError("routes.yaml", 3, "routes[0].target", "unknown upstream"),
    UpstreamSpec("new", "https://new:8443/v2", "https", "new", 8443, "/v2", pool_size=8, ca_file="/ca.pem"),
    ShadowSettings(queue=10, redact=("secret",), latency_ratio=0.0),
    ROUTE,
    ROUTE.shadow,
    ROUTE.compare,
    ROUTE.rollout,
    ROUTE.fallback,
    ROUTE.breaker,
    StickyKey("cookie", "sid"),
    Gate(min_count=5, p99_ratio=0.0),
    RollbackTriggers(diff_rate=0.05),
    Match(ROUTE, {"id": "7"}, "/v2/api/v1/users/7"),
]
COPIES: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda value: pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL)),
}


def test_every_value_class_of_the_module_has_an_example() -> None:
    """A value object added to the model is round-tripped too (or this fails)."""
    classes = {v for v in vars(model).values() if isinstance(v, type) and dataclasses.is_dataclass(v)}
    assert classes == {type(v) for v in VALUES}


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_object_round_trips(value: Any, how: str) -> None:
    """copy, deepcopy and pickle give an equal object of the same class and repr, fingerprint included."""
    again = COPIES[how](value)
    assert type(again) is type(value)
    assert again == value
    assert repr(again) == repr(value)
    assert [getattr(again, f.name) for f in dataclasses.fields(value)] == [
        getattr(value, f.name) for f in dataclasses.fields(value)
    ]


def test_the_routes_of_a_loaded_table_deep_copy_with_their_fingerprints() -> None:
    """Parsed routes deep-copy: every route equal, every fingerprint the same."""
    table = parse_routes(
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:3000'}\n  new: {url: 'http://127.0.0.1:8000'}\n"
        "routes:\n  - {name: a, match: {path: '/a/{id}'}, target: auto, shadow: {sample: 1.0},\n"
        "     rollout: {stages: [0, 50, 100]}, circuit_breaker: {consecutive: 3}}\n",
        "r.yaml",
    )
    routes = (*table.routes, table.default)
    again = copy.deepcopy(routes)
    assert again == routes
    assert [r.fingerprint for r in again] == [r.fingerprint for r in routes]
    assert copy.deepcopy(dict(table.upstreams)) == table.upstreams
