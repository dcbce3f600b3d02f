"""The ``rollout:`` mappings of a routes file (top-level defaults, per route overrides) into a `RolloutPlan`.

A plan is read in two steps so that a route can override the defaults *field by field*: each mapping is
first read into `PlanParts` (only the keys it gives, validated, with their lines in any error), then
`merge` lays a route's parts over the defaults' (``gate`` and ``rollback`` merge key by key too) and
`PlanParts.plan` fills what neither gives from `RolloutPlan`'s defaults. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from proxy.routing.fields import Reader
from proxy.routing.model import Gate, RollbackTriggers, RolloutPlan, StickyKey

__all__ = ["PlanParts", "merge", "read_plan", "sticky_key"]

_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 6265 cookie-name: a token (no separators).
_COOKIE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PLAN = {"stages": False, "sticky": False, "testers": False, "gate": False, "rollback": False}
_TESTERS = {"header": True, "value": True}
_GATE_KEYS = tuple(f.name for f in fields(Gate))
_ROLLBACK_KEYS = tuple(f.name for f in fields(RollbackTriggers))
_STICKY_HELP = "'ip', 'jwt_sub', 'header:NAME' or 'cookie:NAME'"


@dataclass(frozen=True)
class PlanParts:
    """The keys one ``rollout:`` mapping gives (None / absent: not given), already validated."""

    stages: tuple[int, ...] | None = None
    sticky: StickyKey | None = None
    testers: tuple[str, str] | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    rollback: dict[str, Any] = field(default_factory=dict)

    def plan(self) -> RolloutPlan:
        """The plan these parts give, `RolloutPlan`'s defaults for the rest."""
        base = RolloutPlan()
        return RolloutPlan(
            stages=self.stages if self.stages is not None else base.stages,
            sticky=self.sticky if self.sticky is not None else base.sticky,
            testers=self.testers if self.testers is not None else base.testers,
            gate=replace(base.gate, **self.gate),
            rollback=replace(base.rollback, **self.rollback),
        )


def merge(defaults: PlanParts, route: PlanParts) -> PlanParts:
    """``route``'s parts over ``defaults``': each given field wins; gate and rollback merge key by key."""
    return PlanParts(
        stages=route.stages if route.stages is not None else defaults.stages,
        sticky=route.sticky if route.sticky is not None else defaults.sticky,
        testers=route.testers if route.testers is not None else defaults.testers,
        gate={**defaults.gate, **route.gate},
        rollback={**defaults.rollback, **route.rollback},
    )


def read_plan(reader: Reader, node: yaml.Node, key: str) -> PlanParts | None:
    """Read one ``rollout:`` mapping; None (errors recorded with file, line and key) when it is invalid."""
    fields_ = reader.mapping(node, key, _PLAN)
    if fields_ is None:
        return None
    stages = fields_.get("stages", lambda n, k: _stages(reader, n, k), None)
    sticky = fields_.get("sticky", lambda n, k: _sticky(reader, n, k), None)
    testers = fields_.get("testers", lambda n, k: _testers(reader, n, k), None)
    none: dict[str, Any] = {}
    gate = fields_.get("gate", lambda n, k: _gate(reader, n, k), none)
    rollback = fields_.get("rollback", lambda n, k: _rollback(reader, n, k), none)
    if not fields_.ok:
        return None
    return PlanParts(stages, sticky, testers, gate, rollback)


def _stages(reader: Reader, node: yaml.Node, key: str) -> tuple[int, ...] | None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        reader.error(node, key, "must be a list of percentages such as [0, 1, 10, 50, 100]")
        return None
    values: list[int] = []
    for index, item in enumerate(node.value):
        value = reader.integer(item, f"{key}[{index}]", 0, 100)
        if value is None:
            return None
        if values and value <= values[-1]:
            reader.error(item, f"{key}[{index}]", f"must be above the stage before it ({values[-1]}): stages "
                         "only increase")  # fmt: skip
            return None
        values.append(value)
    if values[0] != 0:
        reader.error(node, key, "must start with 0 (shadowing only: new serves nothing yet)")
        return None
    if values[-1] != 100:
        reader.error(node, key, "must end with 100 (migrated: new serves every request)")
        return None
    if len(values) < 2:  # pragma: no cover - [0] fails the last check, [100] the first
        return None
    return tuple(values)


def sticky_key(text: str) -> StickyKey | str:
    """Parse a ``sticky`` value: the `StickyKey`, or the problem as a message."""
    if text in ("ip", "jwt_sub"):
        return StickyKey(text)
    kind, sep, name = text.partition(":")
    if sep and kind == "header":
        if _HEADER.fullmatch(name) is None:
            return f"{name!r} is not a valid header name (in {text!r})"
        return StickyKey("header", name.lower())
    if sep and kind == "cookie":
        if _COOKIE.fullmatch(name) is None:
            return f"{name!r} is not a valid cookie name (in {text!r})"
        return StickyKey("cookie", name)
    return f"must be {_STICKY_HELP}; got {text!r}"


def _sticky(reader: Reader, node: yaml.Node, key: str) -> StickyKey | None:
    text = reader.string(node, key)
    if text is None:
        return None
    parsed = sticky_key(text)
    if isinstance(parsed, str):
        reader.error(node, key, parsed)
        return None
    return parsed


def _testers(reader: Reader, node: yaml.Node, key: str) -> tuple[str, str] | None:
    fields_ = reader.mapping(node, key, _TESTERS)
    if fields_ is None:
        return None
    header = fields_.get("header", lambda n, k: reader.string(n, k, _header_name), "")
    value = fields_.get("value", lambda n, k: reader.string(n, k, _header_value), "")
    return (header.lower(), value) if fields_.ok else None


def _header_name(name: str) -> str | None:
    return None if _HEADER.fullmatch(name) else f"{name!r} is not a valid header name"


def _header_value(value: str) -> str | None:
    if value != value.strip() or not value.isascii() or not value.isprintable():
        return "must be printable ASCII without leading or trailing spaces (it is compared byte for byte)"
    return None


def _gate(reader: Reader, node: yaml.Node, key: str) -> dict[str, Any] | None:
    fields_ = reader.mapping(node, key, {name: False for name in _GATE_KEYS})
    if fields_ is None:
        return None
    given: dict[str, Any] = {}
    for name in fields_.nodes:
        if name == "verdict":
            given[name] = fields_.get(name, reader.boolean, True)
        elif name == "min_count":
            given[name] = fields_.get(name, lambda n, k: reader.integer(n, k, 0, 1 << 31), 0)
        elif name == "min_s":
            given[name] = fields_.get(name, lambda n, k: reader.number(n, k, 0, 30 * 86400), 0.0)
        elif name == "error_margin":
            given[name] = fields_.get(name, lambda n, k: reader.number(n, k, 0, 1), 0.0)
        else:  # p99_ratio; 0: not checked
            given[name] = fields_.get(name, lambda n, k: reader.number(n, k, 0, 1000), 0.0)
    return given if fields_.ok else None


def _rollback(reader: Reader, node: yaml.Node, key: str) -> dict[str, Any] | None:
    fields_ = reader.mapping(node, key, {name: False for name in _ROLLBACK_KEYS})
    if fields_ is None:
        return None
    given: dict[str, Any] = {}
    for name in fields_.nodes:
        if name == "min_count":
            given[name] = fields_.get(name, lambda n, k: reader.integer(n, k, 1, 1 << 31), 1)
        elif name == "p99_ratio":  # 0: not checked
            given[name] = fields_.get(name, lambda n, k: reader.number(n, k, 0, 1000), 0.0)
        else:  # error_rate, connect_error_rate, diff_rate: shares
            given[name] = fields_.get(name, lambda n, k: reader.number(n, k, 0, 1), 0.0)
    return given if fields_.ok else None
