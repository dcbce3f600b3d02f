"""The leader's lease: one Redis key, SET NX PX with a random owner id, renewed by compare-and-set.

Every serving process (each replica, each worker) contends; the one holding the key decides rollouts,
the others only apply what it wrote. The holder renews at a third of the TTL, so a missed renewal or two
does not lose it; a dead holder's key expires after the TTL and the next contender takes over. Renewal
and release are Lua scripts that act only if the key still names this owner, so a holder that was paused
past its TTL cannot extend or delete its successor's lease. Redis keeps the time (PX), so replicas need
no synchronised clocks; the local clock only paces renewals and is injectable for tests.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis

from proxy.rollout.state import text

__all__ = ["DEFAULT_TTL_S", "Lease", "new_owner_id"]

DEFAULT_TTL_S: Final = 5.0

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_owner_id() -> str:
    """A leader id that says which process it is (host and pid) and cannot repeat (random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """One contender for the lease at ``key``: :meth:`tick` acquires or renews, :meth:`release` gives up."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        owner: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.key = key
        self.owner = owner or new_owner_id()
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.clock = clock
        self.held = False
        self._renewed_at = float("-inf")

    async def tick(self) -> bool:
        """Take the lease if free, renew it if held and a third of the TTL has passed; True if held."""
        now = self.clock()
        if self.held:
            if now - self._renewed_at < self.ttl_ms / 3000:
                return True
            renewed = await self.redis.eval(_RENEW, 1, self.key, self.owner, str(self.ttl_ms))
            self.held = bool(renewed)
        else:
            self.held = bool(await self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))
        if self.held:
            self._renewed_at = now
        return self.held

    async def holder(self) -> str | None:
        """Who holds the lease now (None: nobody)."""
        raw = await self.redis.get(self.key)
        return text(raw) if raw is not None else None

    async def release(self) -> None:
        """Give the lease up if held (on stop), so another contender need not wait for the TTL."""
        if self.held:
            self.held = False
            await self.redis.eval(_RELEASE, 1, self.key, self.owner)
