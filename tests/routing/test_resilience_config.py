"""The ``fallback:`` and ``circuit_breaker:`` keys: defaults, per-route overrides, errors with lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from proxy.routing.model import BreakerSpec, FallbackSpec
from proxy.routing.table import RoutesError, RouteTable, parse_routes

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "proxy" / "routing" / "routes.schema.json").read_text())
HEAD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:3000"}
  new: {url: "http://127.0.0.1:8000", timeout: 10}
"""


def parse(text: str) -> RouteTable:
    """Parse ``HEAD`` plus ``text``."""
    return parse_routes(HEAD + text, "r.yaml")


def errors(text: str) -> list[tuple[int, str, str]]:
    """(line, key, message) of each error in ``HEAD`` plus ``text``."""
    with pytest.raises(RoutesError) as caught:
        parse(text)
    return [(e.line, e.key, e.message) for e in caught.value.errors]


def by_name(table: RouteTable) -> dict[str, Any]:
    """Route name -> route."""
    return {r.name: r for r in (*table.routes, table.default)}


def test_off_unless_asked() -> None:
    """Without either key no route has a fallback or a breaker."""
    routes = by_name(parse("routes: [{name: a, match: {path: /a}, target: new}]\n"))
    assert routes["a"].fallback is None and routes["a"].breaker is None


def test_top_level_defaults_apply_to_routes_sending_to_new() -> None:
    """A top-level key gives routes to new its value; routes to legacy (and the default) get nothing."""
    routes = by_name(
        parse(
            "fallback: true\n"
            "circuit_breaker: {consecutive: 3}\n"
            "routes:\n"
            "  - {name: n, match: {path: /n}, target: new}\n"
            "  - {name: l, match: {path: /l}, target: legacy}\n"
        )
    )
    assert routes["n"].fallback == FallbackSpec()
    assert routes["n"].breaker == BreakerSpec(consecutive=3)
    assert routes["l"].fallback is None and routes["l"].breaker is None
    assert routes["default"].fallback is None


def test_default_route_to_new_gets_the_defaults() -> None:
    """``default: new`` makes the catch-all route a route to new: it gets the top-level defaults."""
    table = parse("default: new\nfallback: {timeout: 2}\n")
    assert table.default.fallback == FallbackSpec(timeout=2.0)


def test_a_route_turns_it_off_or_overrides_fields() -> None:
    """``false`` turns a default off; a mapping overrides the default's fields; ``true`` is the default."""
    routes = by_name(
        parse(
            "fallback: {timeout: 1.5}\n"
            "circuit_breaker: {cool_down_s: 30}\n"
            "routes:\n"
            "  - {name: unguarded, match: {path: /a}, target: new, fallback: false, circuit_breaker: false}\n"
            "  - {name: more, match: {path: /b}, target: new, fallback: {on_5xx: true},"
            " circuit_breaker: {half_open: 1}}\n"
            "  - {name: same, match: {path: /c}, target: new, fallback: true}\n"
        )
    )
    assert routes["unguarded"].fallback is None and routes["unguarded"].breaker is None
    assert routes["more"].fallback == FallbackSpec(timeout=1.5, on_5xx=True)
    assert routes["more"].breaker == BreakerSpec(cool_down_s=30.0, half_open=1)
    assert routes["same"].fallback == FallbackSpec(timeout=1.5)


def test_the_fingerprint_ignores_them() -> None:
    """Turning a fallback on does not start a new comparison epoch."""
    plain = parse("routes: [{name: a, match: {path: /a}, target: new}]\n").routes[0]
    guarded = parse("routes: [{name: a, match: {path: /a}, target: new, fallback: true}]\n").routes[0]
    assert plain.fingerprint == guarded.fingerprint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "fallback: yes please\n",
            (4, "fallback", "must be true, false or a mapping with keys connect, timeout, on_5xx"),
        ),
        (
            "fallback: {retry: true}\n",
            (4, "fallback.retry", "unknown key 'retry' (allowed: connect, timeout, on_5xx)"),
        ),
        ("fallback: {on_5xx: 1}\n", (4, "fallback.on_5xx", "must be true or false; got an integer")),
        ("fallback: {timeout: -1}\n", (4, "fallback.timeout", "must be a number >= 0 and <= 3600; got -1")),
        (
            "fallback: {timeout: 10}\n",
            (4, "fallback.timeout", "must be below upstreams.new.timeout (10s), or new's own timeout"),
        ),
        (
            "circuit_breaker: {failure_rate: 0}\n",
            (4, "circuit_breaker.failure_rate", "must be a number > 0 and <= 1; got 0"),
        ),
        (
            "circuit_breaker: {half_open: 0}\n",
            (4, "circuit_breaker.half_open", "must be an integer from 1 to 1000"),
        ),
        (
            "routes:\n  - name: a\n    match: {path: /a}\n    target: new\n    circuit_breaker:\n"
            "      cool_down_s: soon\n",
            (9, "routes[0].circuit_breaker.cool_down_s", "must be a number > 0 and <= 3600; got a string"),
        ),
        (
            "routes:\n  - name: a\n    match: {path: /a}\n    target: new\n    fallback: [connect]\n",
            (8, "routes[0].fallback", "must be true, false or a mapping"),
        ),
    ],
)
def test_errors_name_line_and_key(text: str, expected: tuple[int, str, str]) -> None:
    """A bad value is refused with its file line, its dotted key and what to write instead."""
    found = errors(text)
    line, key, fragment = expected
    assert any(e[0] == line and e[1] == key and fragment in e[2] for e in found), found


def test_a_bad_route_key_refuses_the_file() -> None:
    """A route whose fallback is invalid is not loaded: the whole file is refused."""
    with pytest.raises(RoutesError):
        parse("routes: [{name: a, match: {path: /a}, target: new, fallback: {timeout: x}}]\n")


@pytest.mark.parametrize(
    "text",
    [
        "fallback: true\ncircuit_breaker: false\n",
        "fallback: {connect: true, timeout: 0.5, on_5xx: true}\n"
        "circuit_breaker: {consecutive: 5, failure_rate: 0.5, min_requests: 20, window_s: 10, cool_down_s: 5,"
        " half_open: 3}\n",
        "routes: [{name: a, match: {path: /a}, target: new, fallback: false,"
        " circuit_breaker: {half_open: 1}}]\n",
    ],
)
def test_schema_accepts_what_the_loader_accepts(text: str) -> None:
    """The JSON Schema accepts the valid forms (editors validate with it)."""
    parse(text)
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(HEAD + text))) == []


@pytest.mark.parametrize(
    "text", ["fallback: {retry: true}\n", "circuit_breaker: {half_open: 0}\n", "fallback: 3\n"]
)
def test_schema_rejects_what_the_loader_rejects(text: str) -> None:
    """The JSON Schema rejects unknown keys, out-of-range values and wrong types, as the loader does."""
    errors(text)
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(HEAD + text)))


def test_shipped_routes_yaml_guards_its_routes_to_new() -> None:
    """The repository's routes.yaml: routes to new have the connect fallback and the breaker, but for the
    health checks (served by legacy they would hide new being down)."""
    table = parse_routes((ROOT / "routes.yaml").read_text(), "routes.yaml")
    for route in (*table.routes, table.default):
        if route.target == "new" and not route.name.startswith("health"):
            assert route.fallback is not None and route.fallback.connect and route.breaker is not None
        else:
            assert route.fallback is None and route.breaker is None
