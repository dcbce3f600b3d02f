"""The dry-run protocol: the gateway signs a write's copy, the new service verifies it and rolls it back.

Header ``X-Strangler-Dry-Run: t=<unix seconds>,n=<nonce>,sig=<hex>`` where ``sig`` is
HMAC-SHA256(secret, ``"<t>\\n<n>\\n<METHOD>\\n<path?query>\\n<hex SHA-256 of the body>"``) and ``n`` is 32
random hex digits. A signature therefore authorises exactly one request: that method, that target, that
body, within `MAX_SKEW` seconds of ``t``; and once: the verifier remembers each nonce it accepted for
`NONCE_TTL` seconds (the new service keeps them in Redis) and refuses it the second time. So a signature
seen on the gateway-to-new hop can be neither replayed nor reused with another body.

``sign`` is the gateway's half; ``verify`` is the service's (and the tests'), so both share one definition.
The gateway reads the secret from the environment (``proxy.ops.settings.dry_run_secret``); a service
passes the same secret to `proxy.dryrun.Verifier`. Pure: no I/O, standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Final

__all__ = ["HEADER", "MAX_SKEW", "NONCE_TTL", "sign", "verify"]

HEADER: Final = "X-Strangler-Dry-Run"
MAX_SKEW: Final = 30
# A nonce must be remembered as long as its signature could still be fresh: t may be up to MAX_SKEW ahead.
NONCE_TTL: Final = 2 * MAX_SKEW + 1

_FORMAT = re.compile(r"t=(\d{1,12}),n=([0-9a-f]{32}),sig=([0-9a-f]{64})\Z")


def _mac(secret: bytes, t: int, nonce: str, method: str, path_qs: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    message = f"{t}\n{nonce}\n{method.upper()}\n{path_qs}\n{digest}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path_qs: str, body: bytes, now: float | None = None,
         nonce: str | None = None) -> str:  # fmt: skip
    """The header value authorising one dry run of ``method path_qs`` with ``body`` at ``now``."""
    t = int(time.time() if now is None else now)
    n = secrets.token_hex(16) if nonce is None else nonce
    return f"t={t},n={n},sig={_mac(secret, t, n, method, path_qs, body)}"


def verify(secret: bytes, value: str, method: str, path_qs: str, body: bytes,
           now: float | None = None) -> str | None:  # fmt: skip
    """The nonce when ``value`` is a fresh, correct signature of this request (constant-time), else None.

    The caller makes it single use: accept the nonce only if it has not been seen in the last
    `NONCE_TTL` seconds, and remember it.
    """
    match = _FORMAT.match(value.strip())
    if match is None:
        return None
    t, nonce = int(match.group(1)), match.group(2)
    current = time.time() if now is None else now
    if abs(current - t) > MAX_SKEW:
        return None
    if not hmac.compare_digest(match.group(3), _mac(secret, t, nonce, method, path_qs, body)):
        return None
    return nonce
