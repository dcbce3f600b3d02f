"""Redis state shared with the legacy app: revoked access tokens and the login rate limit.

Key formats are part of the contract (docs/API.md, Auth) because both services read and write them.
A :class:`RequestCache` bound to a dry-run request reads normally but skips every write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

# INCR each key, EXPIRE it when the count is 1 (a fixed window) or when it lost its TTL (a crash
# between INCR and EXPIRE must not lock an account forever), and report count and TTL, in one atomic
# round trip. Redis 6.2 (the embedded one) has no EXPIRE NX, hence the script.
_HIT_SCRIPT = """
local out = {}
for _, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('TTL', key)
  if count == 1 or ttl < 0 then
    redis.call('EXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""


@dataclass(frozen=True)
class Hit:
    """One rate-limit key after an attempt: its count in this window and the seconds left."""

    count: int
    ttl: int


class Cache:
    """The process-wide Redis client with the configured key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._hit = client.register_script(_HIT_SCRIPT)
        # The two views a request may use, made once (no allocation per request).
        self.live = RequestCache(self, dry_run=False)
        self.dry = RequestCache(self, dry_run=True)

    async def first_use(self, key: str, ttl: int) -> bool:
        """True the first time ``key`` is claimed within ``ttl`` seconds (SET NX: atomic across instances)."""
        return bool(await self.client.set(f"{self.prefix}{key}", b"1", nx=True, ex=ttl))


class RequestCache:
    """Per-request Redis operations (writes skipped for a dry run)."""

    __slots__ = ("_cache", "dry_run")

    def __init__(self, cache: Cache, dry_run: bool) -> None:
        self._cache = cache
        self.dry_run = dry_run

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        await self._cache.client.ping()

    async def is_revoked(self, jti: str) -> bool:
        """True when an access token id was revoked by a logout on either service."""
        found: int = await self._cache.client.exists(f"{self._cache.prefix}revoked:{jti}")
        return found > 0

    async def revoke(self, jti: str, ttl: int) -> None:
        """Mark an access token id revoked until it would have expired anyway."""
        if self.dry_run or ttl <= 0:
            return
        await self._cache.client.set(f"{self._cache.prefix}revoked:{jti}", b"1", ex=ttl)

    async def login_hits(self, account: str, ip: str, window: int) -> tuple[Hit, Hit]:
        """Count a login attempt for the account hash and the client ip; return both counters."""
        keys = [f"{self._cache.prefix}rl:login:acct:{account}", f"{self._cache.prefix}rl:login:ip:{ip}"]
        if self.dry_run:
            return await self._peek(keys, window)
        raw: list[Any] = await self._cache._hit(keys=keys, args=[window])
        return Hit(int(raw[0]), int(raw[1])), Hit(int(raw[2]), int(raw[3]))

    async def _peek(self, keys: list[str], window: int) -> tuple[Hit, Hit]:
        # What the attempt would have counted, without counting it.
        pipe = self._cache.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        raw = await pipe.execute()
        hits = []
        for i in (0, 2):
            count = int(raw[i] or 0) + 1
            hits.append(Hit(count, int(raw[i + 1]) if count > 1 else window))
        return hits[0], hits[1]
