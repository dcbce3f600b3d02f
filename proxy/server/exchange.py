"""`Exchange`: one completed primary request/response pair, handed by the data path to shadowing."""

from __future__ import annotations

from typing import Any, NamedTuple

from proxy.http1.headers import Headers, header_pairs
from proxy.routing.table import Route

__all__ = ["Exchange", "Headers", "header_pairs"]  # Headers and header_pairs re-exported (proxy.http1)


class Exchange(NamedTuple):
    """What the primary upstream was asked and answered, as the gateway saw it.

    ``path`` is the forwarded path (the upstream's base path not included) and ``query`` the query
    string without ``?`` ("" when absent). ``request_lines`` are the headers as forwarded,
    ``b"Name: value"``, without ``Host``, hop-by-hop and framing headers, which a replaying pool sets for
    itself, and never a client's ``X-Strangler-Dry-Run`` (`request_headers` gives them as pairs). A
    tuple: one is made per shadowed request, on the data path. A body is None when it was larger than the
    shadow's ``body_cap`` (not teed). ``response_headers`` are the upstream's, before hop-by-hop removal.
    ``client_host`` is the client's Host, which a replaying pool sends instead of its own unless its
    upstream says ``host: upstream``. ``prewrite`` is, for a sampled write, the shadow's handle of new's
    dry run run *before* the primary was forwarded (`ShadowSink.prewrite`), None otherwise.
    """

    route: Route
    method: str
    path: str
    query: str
    request_lines: list[bytes]
    request_body: bytes | None
    primary: str
    status: int
    response_headers: Headers
    response_body: bytes | None
    latency_s: float
    request_id: str
    client_host: bytes | None = None
    prewrite: Any = None  # proxy.shadow.prewrite.Prewrite (a layer above)

    @property
    def path_qs(self) -> str:
        """The forwarded path with ``?query`` when there is one."""
        return self.path + "?" + self.query if self.query else self.path

    @property
    def request_headers(self) -> Headers:
        """The forwarded request headers as (name, value) pairs."""
        return header_pairs(self.request_lines)
