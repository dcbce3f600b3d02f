"""Dry runs for any Python service: the gateway's signed copy of a write, verified and rolled back.

The gateway shadows a write by sending the new service a copy signed with ``X-Strangler-Dry-Run``
(`protocol`: HMAC over time, nonce, method, target and body hash). The service verifies it, runs the
write inside a transaction it rolls back, and answers as it would have. This package is the service's
half as a library, importable without the rest of the gateway:

* `protocol`: ``sign`` / ``verify`` (standard library only);
* `Verifier`: signature and single use against a `NonceStore` (`MemoryNonceStore`, `RedisNonceStore`);
* `proxy.dryrun.web`: the aiohttp middleware; `proxy.dryrun.asgi`: the ASGI one (Starlette, FastAPI).

docs/ADOPTING.md shows the rollback with asyncpg and SQLAlchemy. A leaf: imports nothing from the
gateway's layers, and the shadow layer and services import it.
"""

from __future__ import annotations

from proxy.dryrun.nonces import MemoryNonceStore, NonceStore, RedisNonceStore
from proxy.dryrun.protocol import HEADER, MAX_SKEW, NONCE_TTL, sign, verify
from proxy.dryrun.verifier import APPLIED, REFUSAL_BODY, Verifier

__all__ = [
    "APPLIED",
    "HEADER",
    "MAX_SKEW",
    "NONCE_TTL",
    "REFUSAL_BODY",
    "MemoryNonceStore",
    "NonceStore",
    "RedisNonceStore",
    "Verifier",
    "sign",
    "verify",
]
