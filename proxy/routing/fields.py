"""Typed readers over YAML nodes that record a ConfigError (file, line, key) instead of raising.

Every reader returns a value or ``None`` after recording why; callers keep going so one load reports
every problem. Lines come from the composed node marks, so an error points at the offending key or
value, not at the start of the document.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from proxy.routing.model import ConfigError

__all__ = ["Fields", "Reader"]

T = TypeVar("T")
_TAG = "tag:yaml.org,2002:"
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "null": "empty (null)",
    "seq": "a list",
    "map": "a mapping",
    "timestamp": "a timestamp",
}


def _kind(node: yaml.Node) -> str:
    return _TYPE_NAMES.get(node.tag.removeprefix(_TAG), f"a {node.tag} value")


class Reader:
    """Collects errors for one file and reads typed values out of its nodes."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[ConfigError] = []
        self._constructor = SafeConstructor()

    def error(self, node: yaml.Node, key: str, message: str) -> None:
        """Record a problem at ``node``'s line."""
        self.errors.append(ConfigError(self.filename, node.start_mark.line + 1, key, message))

    def mapping(self, node: yaml.Node, key: str, allowed: dict[str, bool]) -> Fields | None:
        """Read a mapping with keys ``allowed`` (name -> required); unknown, missing, duplicate: errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"must be a mapping with keys {', '.join(allowed)}; got {_kind(node)}")
            return None
        fields = Fields(self, node, key)
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(name, str) or key_node.tag != _TAG + "str":
                self.error(key_node, key, f"keys must be plain names; got {_kind(key_node)}")
            elif name in fields.nodes:
                first = fields.keys[name].start_mark.line + 1
                self.error(key_node, fields.sub(name), f"duplicate key (first given on line {first})")
            elif name not in allowed:
                self.error(
                    key_node, fields.sub(name), f"unknown key {name!r} (allowed: {', '.join(allowed)})"
                )
            else:
                fields.nodes[name] = value_node
                fields.keys[name] = key_node
        for name, required in allowed.items():
            if required and name not in fields.nodes:
                self.error(node, key, f"missing required key {name!r}")
                fields.ok = False
        return fields

    def scalar(self, node: yaml.Node, key: str, tags: tuple[str, ...], expected: str) -> object | None:
        """Construct a scalar whose resolved tag is one of ``tags`` (e.g. ``("int", "float")``)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag.removeprefix(_TAG) not in tags:
            hint = ""
            if tags == ("str",) and isinstance(node, yaml.ScalarNode) and node.value:
                # YAML 1.1 reads yes/no/on/off, numbers and ~ as non-strings; quoting fixes it.
                hint = f' (write "{node.value}" in quotes if you meant the text)'
            self.error(node, key, f"must be {expected}; got {_kind(node)}{hint}")
            return None
        try:
            value: object = self._constructor.construct_object(node)
            return value
        except ConstructorError as exc:  # e.g. an unparsable timestamp-looking value
            self.error(node, key, f"must be {expected}; {exc.problem}")
            return None

    def string(
        self, node: yaml.Node, key: str, check: Callable[[str], str | None] | None = None
    ) -> str | None:
        """A non-empty string; ``check`` returns an error message or None."""
        value = self.scalar(node, key, ("str",), "a string")
        if not isinstance(value, str):
            return None
        problem = "must not be empty" if not value else check(value) if check else None
        if problem:
            self.error(node, key, problem)
            return None
        return value

    def number(
        self, node: yaml.Node, key: str, low: float, high: float, low_open: bool = False
    ) -> float | None:
        """A finite number in [low, high] (or (low, high] when ``low_open``)."""
        span = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        value = self.scalar(node, key, ("int", "float"), f"a number {span}")
        if not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            self.error(node, key, f"must be a number {span}; got {value!r}")
            return None
        return float(value)

    def integer(self, node: yaml.Node, key: str, low: int, high: int) -> int | None:
        """An integer in [low, high]."""
        value = self.scalar(node, key, ("int",), f"an integer from {low} to {high}")
        if not isinstance(value, int):
            return None
        if not low <= value <= high:
            self.error(node, key, f"must be an integer from {low} to {high}; got {value}")
            return None
        return value

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        """``true`` or ``false``."""
        value = self.scalar(node, key, ("bool",), "true or false")
        return value if isinstance(value, bool) else None

    def strings(
        self,
        node: yaml.Node,
        key: str,
        check: Callable[[str], str | None] | None = None,
        empty_ok: bool = True,
    ) -> tuple[str, ...] | None:
        """A list of strings, each passed to ``check``; duplicates are errors."""
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, key, f"must be a list of strings; got {_kind(node)}")
            return None
        if not node.value and not empty_ok:
            self.error(node, key, "must not be an empty list (leave the key out instead)")
            return None
        values: list[str] = []
        ok = True
        for index, item in enumerate(node.value):
            value = self.string(item, f"{key}[{index}]", check)
            if value is None:
                ok = False
            elif value in values:
                self.error(item, f"{key}[{index}]", f"duplicate entry {value!r}")
                ok = False
            else:
                values.append(value)
        return tuple(values) if ok else None


class Fields:
    """The present keys of one mapping, with their value nodes, for typed reads with defaults."""

    def __init__(self, reader: Reader, node: yaml.MappingNode, key: str) -> None:
        self.reader = reader
        self.node = node
        self.key = key
        self.nodes: dict[str, yaml.Node] = {}
        self.keys: dict[str, yaml.Node] = {}
        self.ok = True

    def sub(self, name: str) -> str:
        """The dotted key of a child, for error messages."""
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, read: Callable[[yaml.Node, str], T | None], default: T) -> T:
        """Read ``name`` with ``read`` or return ``default`` if absent; a bad value clears ``ok``."""
        node = self.nodes.get(name)
        if node is None:
            return default
        value = read(node, self.sub(name))
        if value is None:
            self.ok = False
            return default
        return value

    def line(self, name: str) -> int:
        """1-based line of ``name``'s value (or of the mapping when absent)."""
        return self.nodes.get(name, self.node).start_mark.line + 1
