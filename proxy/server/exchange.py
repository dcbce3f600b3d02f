"""`Exchange`: one completed primary request/response pair, handed by the data path to shadowing."""

from __future__ import annotations

from typing import Any

from proxy.http1.headers import Headers, header_pairs
from proxy.routing.table import Route
from proxy.upstream.pipeconn import Expected

__all__ = ["Exchange", "Headers", "header_pairs"]  # Headers and header_pairs re-exported (proxy.http1)


class Exchange(Expected):
    """What the primary upstream was asked and answered, as the gateway saw it.

    ``path`` is the forwarded path (the upstream's base path not included) and ``query`` the query
    string without ``?`` ("" when absent); ``target`` is both as the request line carries them (bytes,
    made once per route-cache entry; b"": not given, `target_bytes` derives it). ``request_lines`` are
    the headers as forwarded, ``b"Name: value"``, without ``Host``, hop-by-hop and framing headers, which a
    replaying pool sets for itself, and never a client's ``X-Strangler-Dry-Run`` (`request_headers` gives
    them as pairs); ``request_block`` is the same lines joined by CRLF, as the data path joined them for
    the primary (b"": not given). A body is None when it was larger than the shadow's ``body_cap`` (not
    teed). ``response_headers`` are the upstream's, before hop-by-hop removal. ``request_id`` is the
    request's id as the gateway sent it (ASCII bytes: not decoded per copy). ``client_host`` is the
    client's Host, which a replaying pool sends instead of its own unless its upstream says
    ``host: upstream``. ``prewrite`` is, for a sampled write, the shadow's handle of new's dry run run
    *before* the primary was forwarded (`ShadowSink.prewrite`), None otherwise. ``key`` is shadowing's
    own: its recording key once it has made it ("" until then). ``response_raw`` is the response's every
    byte as the upstream sent them (status line, headers, body), when it answered a GET, came whole in one
    read, in the commonest shape, with keep-alive, and its body was teed; b"" otherwise: a shadow copy's
    answer that is these bytes is matched without being read. It is the `Expected` answer of its pipelined
    copy (`proxy.upstream.pipeconn`): ``compared``, the header names its comparison compares, is
    shadowing's to set.

    A compiled class, not a NamedTuple: one is made per shadowed request, on the data path, and a
    NamedTuple's construction is an interpreted ``__new__`` (or ``tuple.__new__`` by name, ~1,100
    instructions); this is a native call. Treated as read-only, except ``key`` and ``compared``.
    """

    __slots__ = (
        "client_host", "key", "latency_s", "method", "path", "prewrite", "primary", "query", "request_block",
        "request_body", "request_id", "request_lines", "route", "target",
    )  # fmt: skip

    def __init__(
        self,
        route: Route,
        method: str,
        path: str,
        query: str,
        request_lines: list[bytes],
        request_body: bytes | None,
        primary: str,
        status: int,
        response_headers: Headers,
        response_body: bytes | None,
        latency_s: float,
        request_id: bytes,
        client_host: bytes | None = None,
        prewrite: Any = None,  # proxy.shadow.prewrite.Prewrite (a layer above)
        request_block: bytes = b"",
        target: bytes = b"",
        response_raw: bytes = b"",
    ) -> None:
        super().__init__(status, response_headers, response_body, response_raw)
        self.route = route
        self.method = method
        self.path = path
        self.query = query
        self.request_lines = request_lines
        self.request_body = request_body
        self.primary = primary
        self.latency_s = latency_s
        self.request_id = request_id
        self.client_host = client_host
        self.prewrite = prewrite
        self.request_block = request_block
        self.target = target
        self.key = ""

    def __repr__(self) -> str:
        return f"<Exchange {self.method} {self.path_qs} {self.route.name} {self.primary} {self.status}>"

    @property
    def path_qs(self) -> str:
        """The forwarded path with ``?query`` when there is one."""
        return self.path + "?" + self.query if self.query else self.path

    @property
    def target_bytes(self) -> bytes:
        """The forwarded path and query as a request line carries them (``target``, or made from them)."""
        return self.target or self.path_qs.encode("utf-8")

    @property
    def header_block(self) -> bytes:
        """The forwarded header lines joined by CRLF (``request_block``, or joined here)."""
        return self.request_block or b"\r\n".join(self.request_lines)

    @property
    def request_headers(self) -> Headers:
        """The forwarded request headers as (name, value) pairs."""
        return header_pairs(self.request_lines)
