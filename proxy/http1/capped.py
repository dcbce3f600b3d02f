"""Bodies collected under a cap: a shadow call keeps at most ``cap + 1`` bytes of a response body.

A shadow copy re-reads a response only to compare it. Buffering all of it cost a 300 MB answer 1.2 GB of
gateway memory, so the collectors (`proxy.upstream.pipeconn.PipeConn`, `proxy.upstream.call.Call`,
`proxy.upstream.fetch`) keep chunks only until the body passes its cap. From then on they feed a running
sha256 instead (``overflow``), and the result is a `Capped`: the first ``cap + 1`` bytes (so that
``len(body) > cap`` still says "over the cap" wherever a length is checked) carrying the digest and size
of the whole body. The judge compares such bodies by ``digest_of``. No I/O.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any, Final

__all__ = ["NO_CAP", "Capped", "digest_of", "overflow", "whole"]

NO_CAP: Final = sys.maxsize  # collectors used outside shadowing keep every byte, as before


class Capped(bytes):
    """The first ``cap + 1`` bytes of a body that was longer, with the ``digest`` (sha256, hex) and
    ``size`` of the whole."""

    digest: str
    size: int


def overflow(chunks: list[bytes], cap: int) -> Any:
    """The body passed ``cap``: hash what was kept, keep only its first ``cap + 1`` bytes (in place),
    and return the running hash that the rest of the body goes into."""
    kept = b"".join(chunks)
    hasher = hashlib.sha256(kept)
    chunks[:] = [kept[: cap + 1]]
    return hasher


def whole(chunks: list[bytes], hasher: Any, size: int) -> bytes:
    """The collected body: the plain bytes, or a `Capped` when ``hasher`` took over (``overflow``)."""
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if hasher is None:
        return body
    capped = Capped(body)
    capped.digest = hasher.hexdigest()
    capped.size = size
    return capped


def digest_of(body: bytes) -> str:
    """The sha256 (hex) of the whole body ``body`` stands for."""
    if isinstance(body, Capped):
        return body.digest
    return hashlib.sha256(body).hexdigest()
