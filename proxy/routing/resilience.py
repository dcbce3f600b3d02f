"""The ``fallback:`` and ``circuit_breaker:`` keys of routes.yaml: read into `FallbackSpec` / `BreakerSpec`.

Each key is accepted at the top level (a default) and per route. ``true`` means the defaults (the
top-level mapping's values for a route, the model's at the top), ``false`` turns it off, a mapping
overrides fields. A top-level default applies to every route whose target sends traffic to new (``new``
or ``auto``): a route served by legacy has nothing to fall back from, so it stays at None and pays
nothing per request. Errors name file, line and key through the shared `Reader`. No I/O.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import yaml

from proxy.routing.fields import Reader
from proxy.routing.model import AUTO, BreakerSpec, FallbackSpec

__all__ = ["NEW_BOUND", "read_breaker", "read_fallback", "resolve"]

T = TypeVar("T")
# The targets whose requests may go to new: the ones a top-level default applies to.
NEW_BOUND = frozenset(("new", AUTO))
_FALLBACK = {"connect": False, "timeout": False, "on_5xx": False}
_BREAKER = {
    "consecutive": False,
    "failure_rate": False,
    "min_requests": False,
    "window_s": False,
    "cool_down_s": False,
    "half_open": False,
}


def _switch(node: yaml.Node) -> bool | None:
    """``true`` / ``false`` written as the whole value (None: something else, e.g. a mapping)."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
        return node.value.lower() in ("true", "yes", "on")
    return None


def read_fallback(
    reader: Reader, node: yaml.Node, key: str, base: FallbackSpec | None, new_timeout: float | None
) -> tuple[FallbackSpec | None, bool]:
    """A ``fallback:`` value: (spec or None for off, ok). ``base``: the defaults a mapping overrides.

    ``new_timeout`` is new's upstream timeout: a fallback timeout must be below it, or new's own 504
    would always come first and the fallback could never happen.
    """
    start = base or FallbackSpec()
    switch = _switch(node)
    if switch is not None:
        return (start if switch else None), True
    if not isinstance(node, yaml.MappingNode):
        reader.error(node, key, "must be true, false or a mapping with keys connect, timeout, on_5xx")
        return None, False
    fields = reader.mapping(node, key, _FALLBACK)
    if fields is None:
        return None, False
    spec = FallbackSpec(
        connect=fields.get("connect", reader.boolean, start.connect),
        timeout=fields.get("timeout", lambda n, k: reader.number(n, k, 0, 3600), start.timeout),
        on_5xx=fields.get("on_5xx", reader.boolean, start.on_5xx),
    )
    if fields.ok and new_timeout is not None and spec.timeout >= new_timeout and "timeout" in fields.nodes:
        reader.error(
            fields.nodes["timeout"], fields.sub("timeout"),
            f"must be below upstreams.new.timeout ({new_timeout:g}s), or new's own timeout answers first "
            "and the request never falls back; lower it (0: no timeout fallback)",
        )  # fmt: skip
        return None, False
    return (spec if fields.ok else None), fields.ok


def read_breaker(
    reader: Reader, node: yaml.Node, key: str, base: BreakerSpec | None
) -> tuple[BreakerSpec | None, bool]:
    """A ``circuit_breaker:`` value: (spec or None for off, ok); ``base``: what a mapping overrides."""
    start = base or BreakerSpec()
    switch = _switch(node)
    if switch is not None:
        return (start if switch else None), True
    if not isinstance(node, yaml.MappingNode):
        reader.error(node, key, f"must be true, false or a mapping with keys {', '.join(_BREAKER)}")
        return None, False
    fields = reader.mapping(node, key, _BREAKER)
    if fields is None:
        return None, False
    spec = dataclasses.replace(
        start,
        consecutive=fields.get(
            "consecutive", lambda n, k: reader.integer(n, k, 0, 1_000_000), start.consecutive
        ),
        failure_rate=fields.get(
            "failure_rate", lambda n, k: reader.number(n, k, 0, 1, True), start.failure_rate
        ),
        min_requests=fields.get(
            "min_requests", lambda n, k: reader.integer(n, k, 1, 1_000_000), start.min_requests
        ),
        window_s=fields.get("window_s", lambda n, k: reader.number(n, k, 0, 3600, True), start.window_s),
        cool_down_s=fields.get(
            "cool_down_s", lambda n, k: reader.number(n, k, 0, 3600, True), start.cool_down_s
        ),
        half_open=fields.get("half_open", lambda n, k: reader.integer(n, k, 1, 1000), start.half_open),
    )
    return (spec if fields.ok else None), fields.ok


def resolve(present: bool, own: T | None, default: T | None, target: str) -> T | None:
    """A route's effective spec: its own key when present (None: turned off), else the top-level default
    when the route sends traffic to new, else None."""
    if present:
        return own
    return default if target in NEW_BOUND else None
