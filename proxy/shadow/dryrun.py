"""The gateway's side of dry-run writes: signing ``X-Strangler-Dry-Run`` (format in docs/API.md).

``t=<unix seconds>,sig=<hex HMAC-SHA256(secret, "<t>\\n<METHOD>\\n<path?query>")>``. The new service
verifies it (within 30 s) and runs the write in a rolled-back transaction. ``verify`` is here too so
tests and the service can share one definition of the format. The secret is read from the environment by
``proxy.ops.settings.dry_run_secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Final

__all__ = ["HEADER", "MAX_SKEW", "sign", "verify"]

HEADER: Final = "X-Strangler-Dry-Run"
MAX_SKEW: Final = 30

_FORMAT = re.compile(r"t=(\d{1,12}),sig=([0-9a-f]{64})\Z")


def _mac(secret: bytes, t: int, method: str, path_qs: str) -> str:
    message = f"{t}\n{method.upper()}\n{path_qs}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path_qs: str, now: float | None = None) -> str:
    """The header value authorising a dry run of ``method path_qs`` at ``now``."""
    t = int(time.time() if now is None else now)
    return f"t={t},sig={_mac(secret, t, method, path_qs)}"


def verify(secret: bytes, value: str, method: str, path_qs: str, now: float | None = None) -> bool:
    """True when ``value`` is a fresh, correct signature for ``method path_qs`` (constant-time)."""
    match = _FORMAT.match(value.strip())
    if match is None:
        return False
    t = int(match.group(1))
    current = time.time() if now is None else now
    if abs(current - t) > MAX_SKEW:
        return False
    return hmac.compare_digest(match.group(2), _mac(secret, t, method, path_qs))
