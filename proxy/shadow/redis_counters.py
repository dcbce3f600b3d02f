"""Shadow counters in Redis, kept per route *epoch* and method: write a batch's increments, register
epochs, read every route's current epoch (and its history), reset a route by hand. Does I/O.

Layout under ``prefix``:

- ``routes`` (set of route names); ``latest`` (hash route -> its newest epoch); ``gen`` (hash route ->
  resets by hand); ``epochs:<route>`` (hash epoch -> JSON: start time, configuration, reset) and
  ``epoch_times:<route>`` (sorted set epoch -> start time);
- everything counted for one epoch under its own prefix ``ep:<route>:<epoch>:`` (``epoch_prefix``):
  ``methods`` (set), ``verdict`` (the stable verdict's state), and per method ``c:<method>`` (counters),
  ``lat:control:<method>`` / ``lat:candidate:<method>`` (bucket -> count), ``paths:<method>``,
  ``sigs:<method>`` and ``noise:<method>`` (path or signature -> count), ``lat:prewrite:<method>`` (the
  waits of sampled writes for their dry run), and for learning noise and generated fields
  (``proxy.shadow.store.PathCounts``) ``aa:<method>``, ``cand:<method>`` and ``shape:<method>`` (path ->
  A/A, candidate and same-shape differences) with the counters ``aa_pairs``, ``learning`` and ``raced``.
  Anything else another part keeps per epoch belongs under the same prefix.

Several gateway replicas add into the same hashes, so a report sums every replica. Errors are the
caller's (``proxy.shadow.redis_pg.RedisPgStore`` logs and counts them).

Bounded: the ``paths``, ``sigs``, ``noise``, ``aa``, ``cand`` and ``shape`` hashes take at most
``max_fields`` distinct fields (a Lua script decides atomically); increments of any further field go to
the ``OTHER`` field. Every key written gets a TTL of ``ttl`` seconds, renewed by each write, so an epoch
no longer written to expires that long after its last write; and a route keeps at most ``MAX_EPOCHS``
epochs (registering one more deletes the oldest's keys).

The match rate over time (the progress view's chart, ``proxy.report.progress``): each flush also adds its
comparisons into ``series:<t>``, one hash per ``SERIES_BUCKET_S``-second bucket starting at unix time
``t``, fields ``<route>|compared`` and ``<route>|differed`` (raw: noise learned later is not taken out),
with a TTL of ``SERIES_TTL_S``. Two HINCRBYs per route per flush, nothing per request.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from proxy.shadow.store import (
    ANY_METHOD,
    Batch,
    Epoch,
    PathCounts,
    RouteStats,
    epoch_reason,
    learning_counts,
    split_key,
)  # fmt: skip

__all__ = [
    "DEFAULT_MAX_FIELDS", "DEFAULT_TTL_S", "EPOCH_KINDS", "MAX_EPOCHS", "OTHER", "SEALED_AFTER_S",
    "SERIES_BUCKET_S", "SERIES_TTL_S", "add", "bucket_start", "epoch_prefix", "generations", "hash_key",
    "learning", "noise_paths", "read_buckets", "register", "reset", "save_state", "series_prefix",
    "signatures", "stats",
]  # fmt: skip

_KINDS: Final = (
    "c", "lat:control", "lat:candidate", "paths", "sigs", "noise", "aa", "cand", "shape", "lat:prewrite",
)  # fmt: skip
# Every per-method hash kept under an epoch's prefix (``hash_key(prefix, kind, key)``): deleted with the
# epoch when a route has too many. A part that keeps more per epoch adds its kind here.
EPOCH_KINDS: Final = _KINDS
# Fields named by the compared data: unbounded.
_CAPPED: Final = frozenset({"paths", "sigs", "noise", "aa", "cand", "shape"})
OTHER: Final = "(other)"  # the field counting what a full hash had no room for (never a diff path)
DEFAULT_MAX_FIELDS: Final = 1000
DEFAULT_TTL_S: Final = 30 * 86400
MAX_EPOCHS: Final = 20  # epochs kept per route (the current one and its history)
SERIES_BUCKET_S: Final = 10
SERIES_TTL_S: Final = 86400  # a day of match-rate buckets: what the progress view's chart can show
_SERIES_COUNTERS: Final = ("compared", "differed")

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

# KEYS: epochs, epoch_times, latest, gen. ARGV: route, epoch, info JSON, start time, ttl, max epochs,
# the route's epoch prefix without the epoch ("<prefix>ep:<route>:"), the kinds (space-separated).
# Returns 0: already the newest; 1: registered as the newest; 2: a return to an earlier epoch's
# configuration, so the route's generation was raised (a fresh epoch follows at the next refresh).
_REGISTER: Final = """
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
  return 2
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
-- Registration order decides which epoch came before which: never at or below the newest's score.
local score = tonumber(ARGV[4])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 0.001 end
redis.call('ZADD', KEYS[2], score, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #popped, 2 do
    local old = popped[i]
    if old ~= ARGV[2] then
      redis.call('HDEL', KEYS[1], old)
      local base = ARGV[7] .. old .. ':'
      for _, m in ipairs(redis.call('SMEMBERS', base .. 'methods')) do
        for kind in string.gmatch(ARGV[8], '%S+') do redis.call('DEL', base .. kind .. ':' .. m) end
      end
      redis.call('DEL', base .. 'methods', base .. 'verdict')
    end
  end
end
if tonumber(ARGV[5]) > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return 1
"""


def epoch_prefix(prefix: str, route: str, epoch: str) -> str:
    """The prefix of every key kept for ``route``'s ``epoch``."""
    return f"{prefix}ep:{route}:{epoch}:"


def hash_key(prefix: str, kind: str, key: str) -> str:
    """The Redis hash of ``kind`` (a ``Batch.incr`` kind) for a recording key (route, epoch, method)."""
    route, epoch, method = split_key(key)
    return f"{epoch_prefix(prefix, route, epoch)}{kind}:{method}"


def _registry(prefix: str, route: str) -> list[str]:
    return [f"{prefix}epochs:{route}", f"{prefix}epoch_times:{route}", prefix + "latest", prefix + "gen"]


def series_prefix(prefix: str) -> str:
    """The prefix of the match-rate buckets (``<prefix>series:<t>``)."""
    return prefix + "series:"


def bucket_start(t: float, step: int = SERIES_BUCKET_S) -> int:
    """The start of the ``step``-second bucket holding unix time ``t``."""
    return int(t // step) * step


def _series(batch: Batch) -> dict[str, int]:
    """The batch's comparisons per route: ``<route>|compared`` and ``<route>|differed``."""
    out: dict[str, int] = {}
    for (kind, key, name), n in batch.incr.items():
        if kind == "c" and name in _SERIES_COUNTERS:
            field = f"{split_key(key)[0]}|{name}"
            out[field] = out.get(field, 0) + n
    return out


async def add(
    redis: aioredis.Redis, prefix: str, batch: Batch, *, max_fields: int = DEFAULT_MAX_FIELDS,
    ttl: int = DEFAULT_TTL_S, now: float | None = None,
) -> None:  # fmt: skip
    """Add a batch's increments (its routes to the set of routes, its methods to their epoch's set) in
    one pipeline, the capped hashes through the capping script, every key's TTL renewed; with ``now``
    (wall time), its comparisons into the match-rate bucket of ``now`` too."""
    pipe = redis.pipeline(transaction=False)
    series = _series(batch) if now is not None else {}
    if series and now is not None:
        key = f"{series_prefix(prefix)}{bucket_start(now)}"
        for name, n in series.items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, SERIES_TTL_S)
    plain: set[str] = set()
    if batch.routes:
        names = set()
        for key in batch.routes:
            route, epoch, method = split_key(key)
            names.add(route)
            methods = epoch_prefix(prefix, route, epoch) + "methods"
            pipe.sadd(methods, method)
            plain.add(methods)
        pipe.sadd(prefix + "routes", *sorted(names))
        plain.add(prefix + "routes")
        for route in names:  # the registry lives as long as anything is written to the route
            plain.update(_registry(prefix, route))
    capped: dict[str, list[str | int]] = {}
    for (kind, key, name), n in batch.incr.items():
        k = hash_key(prefix, kind, key)
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


async def register(
    redis: aioredis.Redis, prefix: str, route: str, epoch: str, config: dict[str, Any], started: float,
    *, ttl: int = DEFAULT_TTL_S, max_epochs: int = MAX_EPOCHS,
) -> int:  # fmt: skip
    """Make ``epoch`` the route's newest (the ``_REGISTER`` script's answer: 0, 1 or 2)."""
    info = orjson.dumps({"started": started, **config}).decode()
    script = redis.register_script(_REGISTER)
    args: list[str | int | float] = [
        route, epoch, info, started, ttl, max_epochs, f"{prefix}ep:{route}:", " ".join(EPOCH_KINDS)
    ]  # fmt: skip
    return int(await script(keys=_registry(prefix, route), args=args))


async def generations(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Every route's reset generation."""
    return {_str(k): int(v) for k, v in (await redis.hgetall(prefix + "gen")).items()}


async def reset(
    redis: aioredis.Redis, prefix: str, route: str, now: float, ttl: int = DEFAULT_TTL_S
) -> Epoch | None:
    """Start a new epoch of ``route`` by hand: its generation raised and the new epoch registered as the
    newest (same configuration as the newest, ``reset`` set). None when the route has no epoch yet."""
    latest = await redis.hget(prefix + "latest", route)
    if latest is None:
        return None
    fingerprint = _str(latest).rpartition(".")[0]
    raw = await redis.hget(f"{prefix}epochs:{route}", _str(latest))
    config = {k: v for k, v in orjson.loads(raw or b"{}").items() if k not in ("started", "reset")}
    gen = int(await redis.hincrby(prefix + "gen", route, 1))
    epoch = f"{fingerprint}.{gen}"
    await register(redis, prefix, route, epoch, {**config, "reset": True}, now, ttl=ttl)
    return Epoch(epoch, now, "reset by hand", config)


async def save_state(
    redis: aioredis.Redis, prefix: str, route: str, epoch: str, state: dict[str, float],
    ttl: int = DEFAULT_TTL_S,
) -> None:  # fmt: skip
    """Replace the stable verdict's state of ``route``'s ``epoch``."""
    k = epoch_prefix(prefix, route, epoch) + "verdict"
    pipe = redis.pipeline(transaction=True)
    pipe.delete(k)
    if state:
        pipe.hset(k, mapping={f: repr(v) for f, v in state.items()})
        if ttl > 0:
            pipe.expire(k, ttl)
    await pipe.execute()


def _epochs(raw: dict[Any, Any], order: list[Any]) -> list[Epoch]:
    """A route's epochs in registration order, each with the reason it began (compared with the one
    before)."""
    out = []
    for k, v in raw.items():
        info = orjson.loads(v)
        started = float(info.pop("started", 0.0))
        out.append(Epoch(_str(k), started, config=info))
    rank = {_str(k): i for i, k in enumerate(order)}
    out.sort(key=lambda e: (rank.get(e.id, -1), e.started, e.id))
    for before, epoch in zip([None, *out[:-1]], out, strict=True):
        epoch.reason = epoch_reason(before, epoch)
    return out


async def stats(redis: aioredis.Redis, prefix: str, history: bool = False) -> dict[str, RouteStats]:
    """Every route's stats in its newest epoch, per method and summed (with every kept epoch's totals in
    ``history`` when asked)."""
    pipe = redis.pipeline(transaction=False)
    pipe.smembers(prefix + "routes")
    pipe.hgetall(prefix + "latest")
    members, latest_raw = await pipe.execute()
    latest = {_str(k): _str(v) for k, v in latest_raw.items()}
    routes = sorted(r for r in (_str(m) for m in members) if r in latest)
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        pipe.hgetall(f"{prefix}epochs:{route}")
        pipe.zrange(f"{prefix}epoch_times:{route}", 0, -1)
    replies = await pipe.execute()
    epochs = {route: _epochs(replies[2 * i], replies[2 * i + 1]) for i, route in enumerate(routes)}
    # Which epochs to read: the newest of each route, and with ``history`` every kept one.
    wanted = [(r, e) for r in routes for e in ([x.id for x in epochs[r]] if history else [latest[r]])]
    if history and any(latest[r] not in {x.id for x in epochs[r]} for r in routes):
        wanted += [(r, latest[r]) for r in routes if latest[r] not in {x.id for x in epochs[r]}]
    pipe = redis.pipeline(transaction=False)
    for route, epoch in wanted:
        base = epoch_prefix(prefix, route, epoch)
        pipe.smembers(base + "methods")
        pipe.hgetall(base + "verdict")
    replies = await pipe.execute()
    methods = {w: sorted(_str(m) for m in replies[2 * i]) for i, w in enumerate(wanted)}
    states = {w: {_str(k): float(v) for k, v in replies[2 * i + 1].items()} for i, w in enumerate(wanted)}
    pipe = redis.pipeline(transaction=False)
    for route, epoch in wanted:
        base = epoch_prefix(prefix, route, epoch)
        for method in methods[(route, epoch)]:
            for kind in _KINDS:
                pipe.hgetall(f"{base}{kind}:{method}")
    hashes = iter(await pipe.execute())
    per: dict[tuple[str, str], RouteStats] = {}
    for route, epoch in wanted:
        total = per[(route, epoch)] = RouteStats(route, state=states[(route, epoch)])
        for method in methods[(route, epoch)]:
            part = {kind: {_str(k): int(v) for k, v in next(hashes).items()} for kind in _KINDS}
            latency = {side: {int(k): v for k, v in part[f"lat:{side}"].items()}
                       for side in ("control", "candidate", "prewrite")}  # fmt: skip
            if not latency["prewrite"]:
                del latency["prewrite"]  # only routes with sampled writes have waits
            one = RouteStats(
                route, counters=part["c"], latency=latency, paths=part["paths"], signatures=part["sigs"],
                noise=part["noise"], aa=part["aa"], cand=part["cand"], shape=part["shape"],
            )
            total.add(one)
            if method != ANY_METHOD:
                total.methods[method] = one
    out: dict[str, RouteStats] = {}
    for route in routes:
        st = out[route] = per[(route, latest[route])]
        known = {e.id: e for e in epochs[route]}
        st.epoch = known.get(latest[route]) or Epoch(latest[route], 0.0)
        if history:
            for e in epochs[route]:
                seen = per.get((route, e.id))
                if seen is not None:
                    e.compared, e.differed = seen.get("compared"), seen.get("differed")
            st.history = epochs[route]
    return out


async def signatures(redis: aioredis.Redis, prefix: str, route: str, epoch: str) -> dict[str, int]:
    """How often each diff signature occurred in ``route``'s ``epoch``, summed over its methods."""
    base = epoch_prefix(prefix, route, epoch)
    methods = sorted(_str(m) for m in await redis.smembers(base + "methods"))
    pipe = redis.pipeline(transaction=False)
    for method in methods:
        pipe.hgetall(f"{base}sigs:{method}")
    out: dict[str, int] = {}
    for counts in await pipe.execute():
        for sig, n in counts.items():
            out[_str(sig)] = out.get(_str(sig), 0) + int(n)
    return out


async def learning(redis: aioredis.Redis, prefix: str, key: str) -> PathCounts:
    """The learning counts of a recording key (route, epoch, method), in one pipeline."""
    pipe = redis.pipeline(transaction=False)
    for kind in ("c", "aa", "cand", "shape"):
        pipe.hgetall(hash_key(prefix, kind, key))
    counters, aa, cand, shape = ({_str(k): int(v) for k, v in h.items()} for h in await pipe.execute())
    return learning_counts(counters, aa, cand, shape)


async def noise_paths(redis: aioredis.Redis, prefix: str, key: str) -> set[str]:
    """Paths known to differ between two control calls for a recording key (route, epoch, method)."""
    return {_str(k) for k in await redis.hkeys(hash_key(prefix, "noise", key))}


# A bucket ended this long ago is complete: writers flush about once a second.
SEALED_AFTER_S: Final = 3.0


async def read_buckets(
    redis: aioredis.Redis, key_prefix: str, since: float, now: float, step: int = SERIES_BUCKET_S,
    ttl: int = SERIES_TTL_S, cache: dict[tuple[str, int], dict[str, int]] | None = None,
) -> list[tuple[int, dict[str, int]]]:  # fmt: skip
    """Every ``step``-second bucket hash ``<key_prefix><t>`` from the one holding ``since`` to the one
    holding ``now`` (not before ``now - ttl``: older ones have expired), oldest first, in one pipeline.
    Shared with the served-traffic buckets (``proxy.rollout.served``), which have the same layout.

    ``cache`` (kept by a caller that reads again and again, like the self-refreshing /report page): the
    complete buckets already read, so a refresh reads only the newest; entries past ``ttl`` are dropped."""
    starts = list(range(bucket_start(max(since, now - ttl), step), bucket_start(now, step) + 1, step))
    known = cache if cache is not None else {}
    wanted = [t for t in starts if (key_prefix, t) not in known]
    pipe = redis.pipeline(transaction=False)
    for start in wanted:
        pipe.hgetall(f"{key_prefix}{start}")
    replies = await pipe.execute() if wanted else []
    read = {t: {_str(k): int(v) for k, v in raw.items()} for t, raw in zip(wanted, replies, strict=True)}
    if cache is not None:
        for t, fields in read.items():
            if t + step + SEALED_AFTER_S < now:
                cache[(key_prefix, t)] = fields
        for old in [k for k in cache if k[1] < now - ttl - step]:
            del cache[old]
    return [(t, read[t] if t in read else known[(key_prefix, t)]) for t in starts]


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
