"""The dry-run protocol as the shadow layer uses it: re-exported from `proxy.dryrun.protocol`.

Kept so that ``from proxy.shadow import dryrun`` goes on working; the definition lives in the leaf
package `proxy.dryrun`, which services outside this repository install and import on their own.
"""

from __future__ import annotations

from proxy.dryrun.protocol import HEADER, MAX_SKEW, NONCE_TTL, sign, verify

__all__ = ["HEADER", "MAX_SKEW", "NONCE_TTL", "sign", "verify"]
