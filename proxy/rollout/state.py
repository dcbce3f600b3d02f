"""A route's rollout state in Redis, and the audit stream of its transitions. Does I/O.

Layout under the shadow store's key prefix (``STRANGLER_SHADOW_PREFIX``, default ``strangler:shadow:``):

- ``rollout:state``: a hash, route -> JSON ``{stage, percent, paused, since, why, digest}``. One HGETALL
  reads every route, so each serving process can poll it several times a second. ``percent`` is stored
  beside the stage index: a replica applies the percent the leader decided even while its own copy of
  routes.yaml is a reload behind.
- ``rollout:events``: a stream (XADD, MAXLEN ~ 10000) with one entry per transition: route, from, to
  (percents), action, who, why and the evidence (JSON) that justified it.
- ``rollout:leader``: the leader's lease (``proxy.rollout.lease``).

A transition is written by :func:`commit`: the state and its event in one Lua script, a compare-and-set
on the route's stored state (a pause by hand is never overwritten by a leader's decision made on the state
before it), which a leader runs with its lease (the write happens only while it still holds it, so a
deposed leader cannot write) and the CLI runs without.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from proxy.routing.model import RolloutPlan

__all__ = [
    "ACTIONS", "CHANGED", "EVENTS_MAXLEN", "NOT_LEADER", "WRITTEN", "Event", "RouteState", "commit", "events",
    "initial", "keys", "load", "plan_digest", "reconcile", "text",
]  # fmt: skip

ACTIONS: Final = (
    "promote", "rollback", "pause", "resume", "manual-promote", "manual-rollback", "plan-changed",
)  # fmt: skip
EVENTS_MAXLEN: Final = 10000


@dataclass(frozen=True)
class Keys:
    """The Redis keys of the autopilot under one prefix."""

    state: str
    events: str
    leader: str
    served: str  # the prefix of the served-traffic buckets (proxy.rollout.served)


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes unless decoding was asked for)."""
    return value.decode() if isinstance(value, bytes) else value


def keys(prefix: str) -> Keys:
    """The autopilot's keys under the shadow store's ``prefix``."""
    base = prefix + "rollout:"
    return Keys(base + "state", base + "events", base + "leader", base + "served:")


@dataclass(frozen=True)
class RouteState:
    """Where one route is: ``stage`` (index into its plan), the ``percent`` new serves, ``paused``,
    ``since`` (wall time the stage began), ``why`` and the ``digest`` of the plan it was decided under."""

    stage: int
    percent: int
    paused: bool
    since: float
    why: str
    digest: str
    # What the route had served in the served-traffic bucket ``base_at`` (-1: none) when the stage began:
    # a stage's window sums whole buckets from the one holding ``since``, and its counts from before
    # ``since`` are taken off (``proxy.rollout.served.since_base``), so the failures of an outage that
    # caused a rollback do not count against the stage that follows it.
    base_at: int = -1
    base: dict[str, int] = field(default_factory=dict, repr=False)
    # The stored bytes it was read from (b"": never stored): what a compare-and-set write expects.
    raw: bytes = field(default=b"", compare=False, repr=False)

    def to_json(self) -> bytes:
        """The hash field's value."""
        doc: dict[str, Any] = {
            "stage": self.stage, "percent": self.percent, "paused": self.paused, "since": self.since,
            "why": self.why, "digest": self.digest,
        }  # fmt: skip
        if self.base_at >= 0:
            doc["base"] = {"t": self.base_at, "f": self.base}
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RouteState:
        """Parse a hash field's value (unknown keys ignored, so an older reader keeps working)."""
        doc: dict[str, Any] = orjson.loads(raw)
        stored = doc.get("base")
        base: dict[str, Any] = stored if isinstance(stored, dict) else {}
        return cls(
            stage=int(doc.get("stage", 0)),
            percent=int(doc.get("percent", 0)),
            paused=bool(doc.get("paused", False)),
            since=float(doc.get("since", 0.0)),
            why=str(doc.get("why", "")),
            digest=str(doc.get("digest", "")),
            base_at=int(base.get("t", -1)),
            base={str(k): int(v) for k, v in (base.get("f") or {}).items()},
            raw=raw if isinstance(raw, bytes) else raw.encode(),
        )


@dataclass(frozen=True)
class Event:
    """One audit entry: a transition of ``route`` from ``from_pct`` to ``to_pct`` percent."""

    route: str
    from_pct: int
    to_pct: int
    action: str
    who: str
    why: str
    evidence: dict[str, Any]
    at: float
    id: str = ""

    def fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "route": self.route, "from": str(self.from_pct), "to": str(self.to_pct), "action": self.action,
            "who": self.who, "why": self.why, "at": repr(self.at),
            "evidence": orjson.dumps(self.evidence, default=str).decode(),
        }  # fmt: skip


def plan_digest(plan: RolloutPlan) -> str:
    """12 hex digits naming a plan's stages, gate and triggers (what a stored stage was decided under)."""
    text = repr((plan.stages, plan.gate, plan.rollback, plan.sticky, plan.testers))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def initial(plan: RolloutPlan, now: float) -> RouteState:
    """A route never seen before: stage 0 (shadowing), starting now."""
    return RouteState(0, plan.stages[0], False, now, "first seen", plan_digest(plan))


def reconcile(state: RouteState, plan: RolloutPlan, now: float) -> tuple[RouteState, str] | None:
    """The state under a changed ``plan`` and why, or None when the plan is the one it was decided under.

    The route keeps its percent if the new plan has that stage; otherwise it goes to the highest stage
    below it (never above: a plan change must not promote). A kept stage keeps its ``since``.
    """
    digest = plan_digest(plan)
    stages = plan.stages
    if state.digest == digest and 0 <= state.stage < len(stages) and stages[state.stage] == state.percent:
        return None  # (a stored index that does not fit the plan, edited by hand, is reconciled too)
    if state.percent in stages:
        index = stages.index(state.percent)
        why = f"plan changed in routes.yaml; stays at {state.percent}% (stage {index})"
        # The stage goes on: its since and its base (proxy.rollout.served.since_base) stay.
        return replace(state, stage=index, digest=digest, raw=b""), why
    lower = [i for i, pct in enumerate(plan.stages) if pct < state.percent] or [0]
    index = lower[-1]
    pct = plan.stages[index]
    why = f"plan changed in routes.yaml; {state.percent}% is not a stage any more: clamped to {pct}%"
    return RouteState(index, pct, state.paused, now, why, digest), why


async def load(redis: aioredis.Redis, prefix: str) -> dict[str, RouteState]:
    """Every route's stored state (a malformed entry is skipped: its route counts as never seen)."""
    raw = await redis.hgetall(keys(prefix).state)
    out = {}
    for name, value in raw.items():
        try:
            out[text(name)] = RouteState.from_json(value)
        except Exception:  # not JSON, not an object, wrong types: one bad entry must not stop every route
            continue
    return out


# KEYS: lease, state, events. ARGV: owner ("" = no lease needed), route, state JSON, maxlen, the expected
# current value ("-": absent), then the event's field/value pairs (none: the state only).
_COMMIT: Final = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = redis.call('HGET', KEYS[2], ARGV[2])
if (ARGV[5] == '-' and current) or (ARGV[5] ~= '-' and current ~= ARGV[5]) then return 2 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if #ARGV > 5 then
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
end
return 1
"""


WRITTEN: Final = 1
NOT_LEADER: Final = 0
CHANGED: Final = 2


async def commit(
    redis: aioredis.Redis, prefix: str, route: str, before: RouteState | None, state: RouteState,
    event: Event | None, owner: str = "",
) -> int:  # fmt: skip
    """Write ``state`` and its ``event`` atomically if the stored state is still ``before`` (as read; None:
    absent) and, with ``owner``, only while it holds the lease. Returns WRITTEN, NOT_LEADER (another
    process leads now) or CHANGED (someone wrote the route meanwhile: read again)."""
    k = keys(prefix)
    flat: list[str] = []
    if event is not None:
        for key, value in event.fields().items():
            flat += [key, value]
    expect = "-" if before is None or not before.raw else before.raw.decode()
    argv = [owner, route, state.to_json().decode(), str(EVENTS_MAXLEN), expect, *flat]
    done = await redis.eval(_COMMIT, 3, k.leader, k.state, k.events, *argv)
    return int(done)


async def events(
    redis: aioredis.Redis, prefix: str, route: str | None = None, count: int = 100
) -> list[Event]:
    """The newest audit events, newest first (of ``route`` only, if given: among the last ``count * 10``)."""
    scan = count * 10 if route else count
    rows = await redis.xrevrange(keys(prefix).events, count=scan) or []
    out = []
    for entry_id, raw in rows:
        f = {text(k): text(v) for k, v in (raw or {}).items()}
        if route is not None and f.get("route") != route:
            continue
        try:
            evidence = orjson.loads(f.get("evidence", "{}"))
        except ValueError:
            evidence = {}
        out.append(Event(
            f.get("route", ""), int(f.get("from", 0)), int(f.get("to", 0)), f.get("action", ""),
            f.get("who", ""), f.get("why", ""), evidence, float(f.get("at", 0.0)), text(entry_id or ""),
        ))  # fmt: skip
        if len(out) >= count:
            break
    return out
