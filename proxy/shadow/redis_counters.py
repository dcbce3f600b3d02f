"""Shadow counters in Redis: write a batch's increments, read every route's stats and noise. Does I/O.

Layout under ``prefix``: ``routes`` (set), ``c:<route>`` (counters), ``lat:<route>:<side>`` (side:
control, candidate, prewrite; bucket -> count), ``paths:<route>``, ``sigs:<route>`` and ``noise:<route>``
(path or signature -> count), and for learning noise and generated fields per method
(``proxy.shadow.store.PathCounts``) ``aa:<route>``, ``cand:<route>`` and ``shape:<route>``
("<METHOD> <path>" -> count) with the counters ``compared:<METHOD>`` and ``aa_pairs:<METHOD>`` in
``c:<route>``. Several gateway replicas add into the same hashes, so a report sums every replica. Errors
are the caller's (``proxy.shadow.redis_pg.RedisPgStore`` logs and counts them).

Bounded: ever-new diff signatures and paths would add a hash field each, forever. The ``paths``,
``sigs``, ``noise``, ``aa``, ``cand`` and ``shape`` hashes take at most ``max_fields`` distinct fields
per route (a Lua script decides atomically, whichever replica writes); increments of any further
field go to the ``OTHER`` field. Every key written gets a TTL of ``ttl`` seconds, renewed by each
write, so a route no longer shadowed stops holding memory after that long.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from proxy.shadow.store import Batch, PathCounts, RouteStats, path_counts

__all__ = ["DEFAULT_MAX_FIELDS", "DEFAULT_TTL_S", "OTHER", "add", "key", "learning", "noise_paths", "stats"]

_KINDS: Final = (
    "c", "lat:control", "lat:candidate", "paths", "sigs", "noise", "aa", "cand", "shape", "lat:prewrite",
)  # fmt: skip
# Fields named by the compared data: unbounded.
_CAPPED: Final = frozenset({"paths", "sigs", "noise", "aa", "cand", "shape"})
OTHER: Final = "(other)"  # the field counting what a full hash had no room for (never a diff path)
DEFAULT_MAX_FIELDS: Final = 1000
DEFAULT_TTL_S: Final = 30 * 86400

# KEYS[1]: the hash; ARGV: max fields, ttl (0: none), OTHER, then field/increment pairs.
_CAPPED_INCR: Final = """
local cap = tonumber(ARGV[1])
local n = redis.call('HLEN', KEYS[1])
for i = 4, #ARGV, 2 do
  local field = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], field) == 0 then
    if n < cap then n = n + 1 else field = ARGV[3] end
  end
  redis.call('HINCRBY', KEYS[1], field, ARGV[i + 1])
end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""


def key(prefix: str, kind: str, route: str) -> str:
    """The Redis hash of ``kind`` (a ``Batch.incr`` kind) for ``route``."""
    if kind.startswith("lat:"):
        return f"{prefix}lat:{route}:{kind[4:]}"
    return f"{prefix}{kind}:{route}"


async def add(
    redis: aioredis.Redis, prefix: str, batch: Batch, *, max_fields: int = DEFAULT_MAX_FIELDS,
    ttl: int = DEFAULT_TTL_S,
) -> None:  # fmt: skip
    """Add a batch's increments (and its routes to the set of routes) in one pipeline, the capped hashes
    through the capping script, every key's TTL renewed."""
    pipe = redis.pipeline(transaction=False)
    if batch.routes:
        pipe.sadd(prefix + "routes", *sorted(batch.routes))
        if ttl > 0:
            pipe.expire(prefix + "routes", ttl)
    capped: dict[str, list[str | int]] = {}
    plain: set[str] = set()
    for (kind, route, name), n in batch.incr.items():
        k = key(prefix, kind, route)
        if kind in _CAPPED:
            capped.setdefault(k, []).extend((name, n))
        else:
            pipe.hincrby(k, name, n)
            plain.add(k)
    if ttl > 0:
        for k in plain:
            pipe.expire(k, ttl)
    script = redis.register_script(_CAPPED_INCR)
    for k, pairs in capped.items():
        await script(keys=[k], args=[max_fields, ttl, OTHER, *pairs], client=pipe)
    await pipe.execute()


async def stats(redis: aioredis.Redis, prefix: str) -> dict[str, RouteStats]:
    """Every route's stats, read with one pipeline."""
    routes = sorted(_str(r) for r in await redis.smembers(prefix + "routes"))
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        for kind in _KINDS:
            pipe.hgetall(key(prefix, kind, route))
    replies = await pipe.execute()
    out: dict[str, RouteStats] = {}
    for i, route in enumerate(routes):
        n = len(_KINDS)
        parts = [{_str(k): int(v) for k, v in h.items()} for h in replies[i * n : i * n + n]]
        out[route] = RouteStats(
            route,
            counters=parts[0],
            latency={"control": {int(k): v for k, v in parts[1].items()},
                     "candidate": {int(k): v for k, v in parts[2].items()},
                     **({"prewrite": {int(k): v for k, v in parts[9].items()}} if parts[9] else {})},
            paths=parts[3],
            signatures=parts[4],
            noise=parts[5],
            aa=parts[6],
            cand=parts[7],
            shape=parts[8],
        )  # fmt: skip
    return out


async def noise_paths(redis: aioredis.Redis, prefix: str, route: str) -> set[str]:
    """Paths known to differ between two control calls on ``route``."""
    return {_str(k) for k in await redis.hkeys(key(prefix, "noise", route))}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def learning(redis: aioredis.Redis, prefix: str, route: str, method: str) -> PathCounts:
    """The learning counts of ``route`` and ``method`` (one pipeline)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(key(prefix, "c", route), [f"compared:{method}", f"aa_pairs:{method}"])
    for kind in ("aa", "cand", "shape"):
        pipe.hgetall(key(prefix, kind, route))
    (compared, pairs), aa, cand, shape = await pipe.execute()
    counters = {f"compared:{method}": int(compared or 0), f"aa_pairs:{method}": int(pairs or 0)}
    aa_t, cand_t, shape_t = ({_str(k): int(v) for k, v in h.items()} for h in (aa, cand, shape))
    return path_counts(counters, aa_t, cand_t, shape_t, method)
