"""Where a verifier remembers the nonces it accepted, so that each signature is used once.

`NonceStore` is the one operation a verifier needs: claim a nonce, atomically, for ``ttl`` seconds.
`MemoryNonceStore` keeps them in the process (one instance of the service, or tests); `RedisNonceStore`
shares them between instances with ``SET NX EX``, so a signature accepted by one replica is refused by
every other.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["MemoryNonceStore", "NonceStore", "RedisNonceStore"]


class NonceStore(Protocol):
    """Remembers claimed nonces for a while."""

    async def claim(self, nonce: str, ttl: int) -> bool:
        """True the first time ``nonce`` is claimed within ``ttl`` seconds, False after that."""
        ...


class MemoryNonceStore:
    """Nonces in this process: bounded to ``max_entries`` (the oldest are forgotten first).

    Forgetting a nonce early only matters while its signature is still fresh (`MAX_SKEW`): size the bound
    above the number of dry runs one instance receives in a minute. ``clock`` is injectable for tests.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"MemoryNonceStore max_entries must be at least 1, got {max_entries}")
        self._max = max_entries
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # in claim order, so expiry order too

    def __len__(self) -> int:
        return len(self._expiry)

    async def claim(self, nonce: str, ttl: int) -> bool:
        """True the first time ``nonce`` is claimed within ``ttl`` seconds."""
        now = self._clock()
        expiry = self._expiry
        while expiry:  # drop the expired ones from the front: claims arrive in time order
            oldest, until = next(iter(expiry.items()))
            if until > now:
                break
            del expiry[oldest]
        if nonce in expiry:
            return False
        if len(expiry) >= self._max:
            expiry.popitem(last=False)
        expiry[nonce] = now + ttl
        return True


class RedisNonceStore:
    """Nonces in Redis under ``prefix`` (``SET NX EX``: atomic across every instance of the service).

    ``client`` is a ``redis.asyncio.Redis``; the store does not own it (the application closes it).
    """

    def __init__(self, client: Any, prefix: str = "strangler:dryrun:") -> None:
        self._client = client
        self._prefix = prefix

    async def claim(self, nonce: str, ttl: int) -> bool:
        """True the first time ``nonce`` is claimed within ``ttl`` seconds, on any instance."""
        return bool(await self._client.set(self._prefix + nonce, b"1", nx=True, ex=ttl))
