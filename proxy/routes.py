"""routes.yaml: load, validate (every error with file, line and key), compile, match.

Skeleton: the public API is final; the loader and matcher are being filled in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ConfigError:
    """One problem in a routes file, located at the offending key or value."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class RoutesError(Exception):
    """A routes file could not be loaded; ``errors`` lists every problem found."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class UpstreamSpec:
    """A named backend: where it is and how the pool talks to it."""

    name: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    connect_timeout: float = 1.0
    total_timeout: float = 30.0
    pool_size: int = 64


@dataclass(frozen=True)
class ShadowSpec:
    """Per-route shadowing: fraction sampled, whether unsafe methods are copied, timeout."""

    sample: float
    writes: bool
    timeout: float


@dataclass(frozen=True)
class CompareRules:
    """How a control/candidate response pair is compared for one route."""

    ignore: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    tolerance: float = 0.0
    null_equals_missing: bool = False
    headers: tuple[str, ...] = ("content-type", "cache-control", "location")


@dataclass(frozen=True)
class ShadowSettings:
    """Global shadow-comparison settings (the top-level ``shadow:`` key)."""

    queue: int = 1000
    concurrency: int = 32
    timeout: float = 5.0
    body_cap: int = 1048576
    aa_sample: float = 0.1
    redact: tuple[str, ...] = ("password", "token", "secret", "key")
    min_compared: int = 100
    match_threshold: float = 0.99


@dataclass(frozen=True)
class Route:
    """One declared route (or the default route, whose ``path`` is ``/{rest*}``)."""

    name: str
    methods: frozenset[str] | None
    path: str
    target: str
    shadow: ShadowSpec | None
    compare: CompareRules
    line: int


@dataclass(frozen=True)
class Match:
    """The result of routing one request: the route, its params, the path to send upstream."""

    route: Route
    params: Mapping[str, str]
    forward_path: str


@dataclass
class RouteTable:
    """A validated, compiled routes file; ``match`` never returns None (the default route catches all)."""

    routes: tuple[Route, ...]
    upstreams: Mapping[str, UpstreamSpec]
    default: Route
    source: str
    sha256: str
    shadow_settings: ShadowSettings = field(default_factory=ShadowSettings)
    loaded_at: float = field(default_factory=time.time)

    def match(self, method: str, path: str) -> Match:
        """Route a canonical path (output of ``paths.canonicalise``) for ``method``."""
        raise NotImplementedError


def parse_routes(text: str, filename: str) -> RouteTable:
    """Parse and validate routes text; raise RoutesError listing every problem."""
    raise NotImplementedError


def load_routes(path: str | Path) -> RouteTable:
    """Read and parse a routes file; raise RoutesError (also for an unreadable file)."""
    raise NotImplementedError
