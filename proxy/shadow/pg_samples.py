"""Differing shadow samples in PostgreSQL (table ``shadow_diffs``, migrations/0002). Does I/O.

``write`` skips samples whose signature already has its quota, inserts the rest with one
``executemany`` and trims each route to its caps; ``expire`` deletes rows past the retention period;
``read`` returns a route's newest samples. Errors are the caller's (``RedisPgStore`` logs and counts
write failures; a missing table on read becomes a ``StoreError`` that says what to do).
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson

from proxy.shadow.store import Sample, StoreError

__all__ = ["expire", "read", "write"]

_INSERT: Final = """
INSERT INTO shadow_diffs (route, signature, method, path, primary_side, control_status, candidate_status,
    control_error, candidate_error, diff, control_body, candidate_body, control_ms, candidate_ms, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, to_timestamp($15))
"""
_TRIM: Final = """
DELETE FROM shadow_diffs d USING (
    SELECT id,
           row_number() OVER (PARTITION BY route, signature ORDER BY created_at DESC, id DESC) AS per_sig,
           row_number() OVER (PARTITION BY route ORDER BY created_at DESC, id DESC) AS per_route
    FROM shadow_diffs WHERE route = ANY($1::text[])
) x
WHERE d.id = x.id AND (x.per_sig > $2 OR x.per_route > $3)
"""
_SELECT: Final = """
SELECT route, signature, method, path, primary_side, control_status, candidate_status, diff::text AS diff,
       control_body, candidate_body, control_ms, candidate_ms, control_error, candidate_error,
       extract(epoch FROM created_at)::float8 AS at
FROM shadow_diffs WHERE route = $1 ORDER BY created_at DESC, id DESC LIMIT $2
"""


async def write(pg: asyncpg.Pool, samples: list[Sample], per_signature: int, per_route: int) -> None:
    """Store the samples whose signature is under its quota, then trim their routes to the caps."""
    routes = sorted({s.route for s in samples})
    async with pg.acquire() as conn:
        # Skip samples whose signature already has its quota, so a saturated signature costs no writes.
        rows = await conn.fetch(
            "SELECT route, signature, count(*) AS n FROM shadow_diffs WHERE route = ANY($1::text[])"
            " GROUP BY route, signature",
            routes,
        )
        have = {(r["route"], r["signature"]): r["n"] for r in rows}
        keep = []
        for s in samples:
            key = (s.route, s.signature)
            if have.get(key, 0) < per_signature:
                have[key] = have.get(key, 0) + 1
                keep.append(s)
        if keep:
            await conn.executemany(_INSERT, [_row(s) for s in keep])
            await conn.execute(_TRIM, routes, per_signature, per_route)


async def expire(pg: asyncpg.Pool, retention_days: float) -> None:
    """Delete the samples older than ``retention_days``."""
    await pg.execute(
        "DELETE FROM shadow_diffs WHERE created_at < now() - make_interval(secs => $1)",
        retention_days * 86400.0,
    )


async def read(pg: asyncpg.Pool, route: str, limit: int) -> list[Sample]:
    """The newest ``limit`` samples of ``route``."""
    try:
        rows = await pg.fetch(_SELECT, route, limit)
    except asyncpg.UndefinedTableError:
        raise StoreError(
            "the database has no shadow_diffs table: apply the migrations (strangler migrate) and retry"
        ) from None
    return [_sample(r) for r in rows]


def _text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; a replacement character keeps the sample storable.
    return value.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")


def _row(s: Sample) -> tuple[Any, ...]:
    diff = orjson.dumps(s.diff, option=orjson.OPT_NON_STR_KEYS).decode()
    return (
        s.route, s.signature, s.method, _text(s.path), s.primary, s.control_status, s.candidate_status,
        s.control_error, s.candidate_error, _text(diff), _text(s.control_body), _text(s.candidate_body),
        s.control_ms, s.candidate_ms, s.at,
    )  # fmt: skip


def _sample(r: asyncpg.Record) -> Sample:
    return Sample(
        route=r["route"], signature=r["signature"], method=r["method"], path=r["path"],
        primary=r["primary_side"], control_status=r["control_status"], candidate_status=r["candidate_status"],
        diff=orjson.loads(r["diff"]), control_body=r["control_body"], candidate_body=r["candidate_body"],
        control_ms=r["control_ms"], candidate_ms=r["candidate_ms"], control_error=r["control_error"],
        candidate_error=r["candidate_error"], at=r["at"],
    )  # fmt: skip
