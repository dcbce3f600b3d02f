"""The value objects of a routes file (re-exported by ``proxy.routing.table``, import them from there)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "AUTO",
    "BreakerSpec",
    "CompareRules",
    "ConfigError",
    "FallbackSpec",
    "Gate",
    "Match",
    "RollbackTriggers",
    "RolloutPlan",
    "Route",
    "RoutesError",
    "ShadowSettings",
    "ShadowSpec",
    "StickyKey",
    "UpstreamSpec",
    "route_fingerprint",
]


class _Value:
    """Base of the frozen value objects here: a copy or an unpickled one is made by calling the class."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled (mypyc), a frozen dataclass restores a copy's state attribute by attribute and meets its
        # own frozen __setattr__; pure Python writes __dict__ directly. Calling __init__ again is the same
        # in both, and recomputes what __post_init__ derives (Route.fingerprint).
        init = [f.name for f in fields(cast("DataclassInstance", self)) if f.init]
        return (type(self), tuple(getattr(self, name) for name in init))


@dataclass(frozen=True)
class ConfigError(_Value):
    """One problem in a routes file, located at the offending key or value (``line`` is 1-based)."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class RoutesError(Exception):
    """A routes file could not be loaded; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class UpstreamSpec(_Value):
    """A named backend: where it is (``base_path`` is "" or "/prefix") and how the pool talks to it.

    ``host`` is ``client`` (send the client's Host, as apps build absolute URLs from it) or ``upstream``
    (send the upstream's own host and port). ``ca_file`` is a PEM bundle to verify an https upstream's
    certificate with instead of the system's trust store.
    """

    name: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    connect_timeout: float = 1.0
    total_timeout: float = 30.0
    pool_size: int = 64
    host_header: str = "client"
    ca_file: str | None = None


@dataclass(frozen=True)
class ShadowSpec(_Value):
    """Per-route shadowing: fraction sampled, whether unsafe methods are copied, timeout in seconds."""

    sample: float
    writes: bool
    timeout: float


@dataclass(frozen=True)
class CompareRules(_Value):
    """How a control/candidate response pair is compared for one route (JSON paths already validated)."""

    ignore: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    tolerance: float = 0.0
    null_equals_missing: bool = False
    headers: tuple[str, ...] = ("content-type", "cache-control", "location")
    # Paths whose values are generated on each call (ids, timestamps, tokens): a value difference with the
    # same shape is not a difference there, a shape difference is (see proxy/shadow/shapes.py).
    generated: tuple[str, ...] = ()


# ---------------------------------------------------------------- the migration autopilot (issue 12)
# A route whose ``target`` is ``auto`` is moved from legacy to new by the autopilot, stage by stage, along
# its ``RolloutPlan`` (the top-level ``rollout:`` defaults, overridden per route by the route's own
# ``rollout:``). ``target: legacy`` or ``target: new`` set by hand overrides any plan: the autopilot leaves
# such a route alone. The stage a route is in lives in Redis (proxy.rollout), not in the file.
AUTO = "auto"


@dataclass(frozen=True)
class StickyKey(_Value):
    """What keeps one client on one side during a canary: ``kind`` is ``header`` or ``cookie`` (``name``
    says which), ``jwt_sub`` (the ``sub`` claim of the bearer token, unverified: it only picks a bucket) or
    ``ip`` (the client address from the trusted hop). A request without the key falls back to its ``ip``."""

    kind: str = "ip"
    name: str = ""


@dataclass(frozen=True)
class Gate(_Value):
    """What a stage must show before the next one (all of it, in the route's current epoch): the verdict
    READY (``verdict``), at least ``min_s`` seconds and ``min_count`` requests served by new in the stage
    (stage 0, shadowing, counts comparisons instead), new's error rate (5xx and connect errors) at most
    legacy's plus ``error_margin``, and new's p99 at most ``p99_ratio`` times legacy's (0: not checked).
    Served counts cover the stage's last 15 minutes at most (``proxy.rollout.served.EVIDENCE_S``)."""

    verdict: bool = True
    min_s: float = 60.0
    min_count: int = 100
    error_margin: float = 0.01
    p99_ratio: float = 1.5


@dataclass(frozen=True)
class RollbackTriggers(_Value):
    """What sends a route in a canary (or migrated) back one step to shadowing, once ``min_count`` requests
    were served by new in the stage: new's 5xx rate above ``error_rate``, its connect-error rate above
    ``connect_error_rate``, its p99 above ``p99_ratio`` times legacy's (0: not checked), or its difference
    rate in the current epoch above ``diff_rate``."""

    error_rate: float = 0.05
    connect_error_rate: float = 0.05
    p99_ratio: float = 3.0
    diff_rate: float = 0.01
    min_count: int = 20


@dataclass(frozen=True)
class RolloutPlan(_Value):
    """A route's way from legacy to new: ``stages`` are the percentages of requests new serves, in order
    (``0`` first: shadowing only; ``100`` last: migrated); ``testers``: an optional (header, value) pair
    whose requests new serves from the first canary stage on (internal testers first)."""

    stages: tuple[int, ...] = (0, 1, 10, 50, 100)
    sticky: StickyKey = field(default_factory=StickyKey)
    testers: tuple[str, str] | None = None
    gate: Gate = field(default_factory=Gate)
    rollback: RollbackTriggers = field(default_factory=RollbackTriggers)


@dataclass(frozen=True)
class FallbackSpec(_Value):
    """When a request sent to new is served by legacy instead: new refused the connection or could not be
    reached (``connect``, any method: nothing reached new), new sent no response byte within
    ``timeout`` seconds (``timeout`` > 0; idempotent methods only, the request may have reached new), or
    new answered 5xx (``on_5xx``, opt-in; idempotent methods only)."""

    connect: bool = True
    timeout: float = 0.0
    on_5xx: bool = False


@dataclass(frozen=True)
class BreakerSpec(_Value):
    """A route's circuit breaker on new: ``consecutive`` failures in a row, or a failure share of at least
    ``failure_rate`` among at least ``min_requests`` in the last ``window_s`` seconds, open it; open, the
    route goes to legacy for ``cool_down_s``; then up to ``half_open`` probe requests go to new, and all
    of them succeeding closes it (one failing opens it again)."""

    consecutive: int = 5
    failure_rate: float = 0.5
    min_requests: int = 20
    window_s: float = 10.0
    cool_down_s: float = 5.0
    half_open: int = 3


# Field-name substrings whose values are never stored (secrets), and those stored only as a tagged
# placeholder (personal data); see proxy/shadow/redact.py.
REDACT_WORDS: tuple[str, ...] = (
    "password", "passwd", "pwd", "token", "secret", "key", "session", "bearer", "jwt", "credential", "cookie",
)  # fmt: skip
PERSONAL_WORDS: tuple[str, ...] = ("email", "phone")


@dataclass(frozen=True)
class ShadowSettings(_Value):
    """Global shadow-comparison settings (the top-level ``shadow:`` key), with their defaults."""

    queue: int = 1000
    concurrency: int = 32
    timeout: float = 5.0
    body_cap: int = 1048576
    aa_sample: float = 0.1
    redact: tuple[str, ...] = REDACT_WORDS
    personal: tuple[str, ...] = PERSONAL_WORDS
    min_compared: int = 100
    match_threshold: float = 0.99
    # New's p99 (its median under 100 timings) may be this many times legacy's, plus 5 ms; 0: latency
    # does not decide the verdict.
    latency_ratio: float = 1.25
    # Stable verdicts: READY once the threshold has held for ready_min_count comparisons and ready_min_s
    # seconds; kept until the match rate falls below match_threshold - ready_margin (hysteresis).
    ready_min_count: int = 100
    ready_min_s: float = 60.0
    ready_margin: float = 0.005


@dataclass(frozen=True)
class Route(_Value):
    """One declared route, or the default route (name ``default``, path ``/{rest*}``, any method).

    ``methods`` is the effective set (``HEAD`` added when ``GET`` is listed); None means any method.
    ``line`` is where the route starts in the file (for the default route: the ``default:`` key, or 0).
    """

    name: str
    methods: frozenset[str] | None
    path: str
    target: str
    shadow: ShadowSpec | None
    compare: CompareRules
    line: int
    # ``limits.max_body``: the largest request body forwarded on this route, bytes (0: no limit); None:
    # the gateway's --max-body applies.
    max_body: int | None = None
    # The autopilot's plan (set for every ``target: auto`` route; also kept, validated but inactive, on a
    # ``legacy``/``new`` route that has its own ``rollout:``: a hand-set target overrides it, so act on it
    # only when ``target == AUTO``), fallback to legacy and the circuit breaker on new (None: off). Not
    # part of the fingerprint: a stage change or a breaker does not start a new epoch.
    rollout: RolloutPlan | None = None
    fallback: FallbackSpec | None = None
    breaker: BreakerSpec | None = None
    # What starts a new comparison epoch when it changes (target, methods, path, compare rules): a short
    # hex digest computed here, so every replica and the report derive the same one from the same file.
    fingerprint: str = field(init=False, compare=False, repr=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", route_fingerprint(self))


def route_fingerprint(route: Route) -> str:
    """12 hex digits naming what a route's comparisons depend on: target, methods, path, compare rules."""
    methods = ",".join(sorted(route.methods)) if route.methods is not None else "*"
    text = repr((route.target, methods, route.path, route.compare))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Match(_Value):
    """The result of routing one request: the route, its params, the path to send upstream."""

    route: Route
    params: Mapping[str, str]
    forward_path: str
