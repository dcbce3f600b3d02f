"""Checking one request's dry-run header: the signature (`proxy.dryrun.protocol.verify`) and single use.

Framework-neutral: the aiohttp and ASGI middlewares (`proxy.dryrun.web`, `proxy.dryrun.asgi`) read the
request and call `Verifier.check`; a service on another framework can do the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from proxy.dryrun.nonces import NonceStore
from proxy.dryrun.protocol import NONCE_TTL, verify

__all__ = ["APPLIED", "REFUSAL_BODY", "Verifier"]

APPLIED = "applied"  # the response header's value: "this was a dry run and it was rolled back"

# The 403 answer to a missing secret, a bad or stale signature, or a replayed nonce. It does not say
# which: telling a forger which part failed would help them.
REFUSAL_BODY = json.dumps(
    {
        "error": {
            "code": "BAD_DRY_RUN",
            "message": "the X-Strangler-Dry-Run header is invalid, expired or already used; "
            "only the gateway may send dry runs (check that the service and the gateway share "
            "STRANGLER_DRY_RUN_SECRET and that their clocks agree)",
        }
    }
).encode()


class Verifier:
    """Accepts a dry run when its header signs this very request, freshly, for the first time.

    ``secret`` is the gateway's STRANGLER_DRY_RUN_SECRET (None: every dry run is refused, so a service
    never runs a write it was not told to roll back). ``clock`` returns Unix seconds (tests inject one).
    """

    def __init__(
        self, secret: str | bytes | None, nonces: NonceStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._nonces = nonces
        self._clock = clock

    async def check(self, header: str, method: str, path_qs: str, body: bytes) -> bool:
        """True when ``header`` authorises this request now and its nonce had not been used."""
        if not self._secret:
            return False
        nonce = verify(self._secret, header, method, path_qs, body, self._clock())
        if nonce is None:
            return False
        return await self._nonces.claim(nonce, NONCE_TTL)
