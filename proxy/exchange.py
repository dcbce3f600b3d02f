"""`Exchange`: one completed primary request/response pair, handed by the data path to shadowing."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.routes import Route

__all__ = ["Exchange", "Headers"]

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the primary upstream was asked and answered, as the gateway saw it.

    ``path`` is the forwarded path (the upstream's base path not included) and ``query`` the query
    string without ``?`` ("" when absent). ``request_headers`` are the headers as forwarded, without
    ``Host`` and the framing headers (``Content-Length``/``Transfer-Encoding``), which a replaying pool
    sets for itself. A body is None when it was larger than the shadow's ``body_cap`` (not teed).
    ``response_headers`` are the upstream's, before hop-by-hop removal.
    """

    route: Route
    method: str
    path: str
    query: str
    request_headers: Headers
    request_body: bytes | None
    primary: str
    status: int
    response_headers: Headers
    response_body: bytes | None
    latency_s: float
    request_id: str
