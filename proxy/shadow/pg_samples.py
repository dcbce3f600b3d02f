"""Differing shadow samples in PostgreSQL: ``strangler.shadow_diffs``, the gateway's own schema. Does I/O.

``write`` decides per route which samples earn a slot (``Slots``: a quota per signature, a cap per
route, frequent signatures always represented) and then deletes the few evicted rows and inserts the
kept samples, so no row is inserted only to be deleted by a trim; ``expire`` deletes rows past the
retention period; ``read`` returns a route's newest samples (of one epoch, when asked). Errors are the
caller's (``RedisPgStore`` logs and counts write failures; a missing table on read becomes a
``StoreError`` that says what to do).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson

from proxy.shadow.store import Sample, StoreError

__all__ = ["expire", "read", "write"]

_INSERT: Final = """
INSERT INTO strangler.shadow_diffs (route, signature, method, path, primary_side, control_status,
    candidate_status, control_error, candidate_error, diff, control_body, candidate_body, control_ms,
    candidate_ms, created_at, epoch, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, to_timestamp($15), $16, $17)
"""
_LOCK_PREFIX: Final = "strangler.shadow_diffs:"  # advisory lock key: one per route (hashtext)
_ROUTE_ROWS: Final = (
    "SELECT id, signature FROM strangler.shadow_diffs WHERE route = $1 ORDER BY created_at, id"
)
_DELETE: Final = "DELETE FROM strangler.shadow_diffs WHERE id = ANY($1::bigint[])"
_SELECT: Final = """
SELECT route, signature, method, path, primary_side, control_status, candidate_status, diff::text AS diff,
       control_body, candidate_body, control_ms, candidate_ms, control_error, candidate_error,
       extract(epoch FROM created_at)::float8 AS at, epoch, request_id
FROM strangler.shadow_diffs WHERE route = $1 {where} ORDER BY created_at DESC, id DESC LIMIT $2
"""


async def write(
    pg: asyncpg.Pool, samples: list[Sample], per_signature: int, per_route: int,
    seen: Mapping[tuple[str, str], int] | None = None,
) -> None:  # fmt: skip
    """Store the samples that earn a slot (`Slots`), each route under a transaction-scoped advisory lock
    so that replicas writing at once keep the caps. Nothing is inserted only to be deleted."""
    by_route: dict[str, list[Sample]] = {}
    for s in samples:
        by_route.setdefault(s.route, []).append(s)
    async with pg.acquire() as conn:
        for route, mine in sorted(by_route.items()):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK_PREFIX + route)
                rows = await conn.fetch(_ROUTE_ROWS, route)
                slots = Slots(per_signature, per_route, functools.partial(_seen, seen or {}, route))
                for row in rows:
                    slots.held(row["id"], row["signature"])
                for s in mine:
                    slots.offer(s)
                if slots.evicted:
                    await conn.execute(_DELETE, slots.evicted)
                if slots.added:
                    await conn.executemany(_INSERT, [_row(s) for s in slots.added])


class Slots:
    """Which samples a route keeps: at most ``per_signature`` of one signature and ``per_route`` in all,
    decided before anything is written.

    Slots go by the highest-averages rule: the k-th example of a signature is worth ``seen / k``, where
    ``seen`` is how often that signature differed (the Redis counters), and a full route gives a new
    sample the slot of the least-worth stored example if the newcomer is worth more. So the most frequent
    signature always keeps its first example, frequent ones keep more, one-off signatures take what is
    left, and equals never displace each other (no churn). An evicted example is the signature's oldest.
    """

    def __init__(self, per_signature: int, per_route: int, seen: Callable[[str], int]) -> None:
        self.per_signature = per_signature
        self.per_route = per_route
        self.seen = seen
        self.rows: dict[str, list[int | Sample]] = {}  # signature -> stored ids and new samples, oldest first
        self.total = 0
        self.evicted: list[int] = []
        self.added: list[Sample] = []

    def held(self, row_id: int, signature: str) -> None:
        """A row already stored (oldest first)."""
        self.rows.setdefault(signature, []).append(row_id)
        self.total += 1

    def offer(self, sample: Sample) -> bool:
        """Keep ``sample`` if it earns a slot (evicting the least-worth example when the route is full)."""
        mine = self.rows.setdefault(sample.signature, [])
        if len(mine) >= self.per_signature or self.per_route <= 0:
            return False
        if self.total >= self.per_route:
            worth = self._worth(sample.signature, len(mine) + 1)
            victim = min(
                (sig for sig, held in self.rows.items() if held and sig != sample.signature),
                key=lambda sig: self._worth(sig, len(self.rows[sig])),
                default=None,
            )
            if victim is None or worth <= self._worth(victim, len(self.rows[victim])):
                return False
            gone = self.rows[victim].pop(0)
            if isinstance(gone, int):
                self.evicted.append(gone)
            else:  # taken in this same batch: it is simply not inserted
                self.added.remove(gone)
            self.total -= 1
        mine.append(sample)
        self.added.append(sample)
        self.total += 1
        return True

    def _worth(self, signature: str, k: int) -> float:
        return max(1, self.seen(signature)) / k


async def expire(pg: asyncpg.Pool, retention_days: float) -> None:
    """Delete the samples older than ``retention_days``."""
    await pg.execute(
        "DELETE FROM strangler.shadow_diffs WHERE created_at < now() - make_interval(secs => $1)",
        retention_days * 86400.0,
    )


async def read(pg: asyncpg.Pool, route: str, limit: int, epoch: str | None = None) -> list[Sample]:
    """The newest ``limit`` samples of ``route`` (of its ``epoch`` only, when given)."""
    try:
        if epoch is None:
            rows = await pg.fetch(_SELECT.format(where=""), route, limit)
        else:
            rows = await pg.fetch(_SELECT.format(where="AND epoch = $3"), route, limit, epoch)
    except asyncpg.UndefinedTableError:
        raise StoreError(
            "the database has no strangler.shadow_diffs table (the gateway's own schema, created when the"
            " gateway starts): run `strangler migrate --gateway` (or start the gateway once) and retry"
        ) from None
    except asyncpg.UndefinedColumnError as e:  # a newer reader (a report) before a newer gateway started
        raise StoreError(
            f"the gateway's schema in this database is older than this strangler ({e}): run"
            " `strangler migrate --gateway` (or start a gateway of this version once) and retry"
        ) from None
    return [_sample(r) for r in rows]


def _seen(seen: Mapping[tuple[str, str], int], route: str, signature: str) -> int:
    return seen.get((route, signature), 1)


def _text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; a replacement character keeps the sample storable.
    return value.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")


def _row(s: Sample) -> tuple[Any, ...]:
    diff = orjson.dumps(s.diff, option=orjson.OPT_NON_STR_KEYS).decode()
    return (
        s.route, s.signature, s.method, _text(s.path), s.primary, s.control_status, s.candidate_status,
        s.control_error, s.candidate_error, _text(diff), _text(s.control_body), _text(s.candidate_body),
        s.control_ms, s.candidate_ms, s.at, s.epoch, _text(s.request_id),
    )  # fmt: skip


def _sample(r: asyncpg.Record) -> Sample:
    return Sample(
        route=r["route"], signature=r["signature"], method=r["method"], path=r["path"],
        primary=r["primary_side"], control_status=r["control_status"], candidate_status=r["candidate_status"],
        diff=orjson.loads(r["diff"]), control_body=r["control_body"], candidate_body=r["candidate_body"],
        control_ms=r["control_ms"], candidate_ms=r["candidate_ms"], control_error=r["control_error"],
        candidate_error=r["candidate_error"], at=r["at"], epoch=r["epoch"], request_id=r["request_id"],
    )  # fmt: skip
