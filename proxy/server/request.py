"""Per-request state of the data path (`Request`), its shadow copy (`Tee`), and the refusal raised from
parser callbacks."""

from __future__ import annotations

from proxy.routing.table import Route
from proxy.server.fallback import Attempt
from proxy.upstream.pool import Headers, UpConn, UpstreamPool

__all__ = ["Refusal", "Request", "Tee", "too_large"]


class Refusal(Exception):
    """A request the gateway answers itself with an error status and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id: bytes = b""


class Tee:
    """What is copied of a sampled request for shadowing: both bodies up to ``cap`` bytes, the response
    headers.

    Made only for a request shadowing wants, so an unsampled request pays one None check per body chunk.
    A body over the cap stops being copied (``req`` or ``resp`` becomes None, ``*_over`` True): the
    exchange then carries no body for it.

    ``hold`` is set for a sampled write (`proxy.server.holding`): the request is held until new's dry
    run of it has answered (``WAIT_BODY``: its body is still arriving; ``ASKED``: the dry run is out), and
    ``prewrite`` is the shadow's handle of that dry run, handed back with the exchange; ``held`` the
    seconds the request waited for it, taken off the primary's latency in the exchange.

    ``raw`` is the response's every byte as the upstream sent them, when it came whole in one read and
    in the commonest shape (`proxy.upstream.conn.UpConn.raw`); b"" otherwise.
    """

    __slots__ = (
        "cap", "held", "hold", "prewrite", "raw", "req", "req_over", "req_size", "resp", "resp_headers",
        "resp_over", "resp_size",
    )  # fmt: skip

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.req: list[bytes] | None = []
        self.req_size = 0
        self.req_over = False
        self.resp: list[bytes] | None = None  # started by the response head
        self.resp_size = 0
        self.resp_over = False
        self.resp_headers: Headers = []  # the upstream's, before hop-by-hop removal
        self.raw = b""  # the whole response as sent, when it was one plain read
        self.hold = 0  # NO_HOLD, WAIT_BODY or ASKED (proxy.server.holding)
        self.prewrite: object = None  # the shadow's handle of the dry run run before the primary
        self.held = 0.0  # seconds held for it (not the primary's latency): while held, when it was asked


class Request:
    """One request on a client connection, from its head to the end of its response.

    A plain slotted class: one is made per request on the hot path.
    """

    __slots__ = (
        "body_done",
        "bytes_in",
        "bytes_out",
        "chunked",
        "conn",
        "error",
        "finished",
        "guard",
        "head",
        "header_block",
        "header_lines",
        "host",
        "http11",
        "id_line",
        "is_head",
        "keep_alive",
        "method",
        "method_str",
        "path",
        "pending",
        "pending_size",
        "pool",
        "query",
        "request_id",
        "resp_done",
        "resp_started",
        "retried",
        "route",
        "served_by",
        "started",
        "status",
        "target",
        "tee",
        "websocket",
    )

    def __init__(self, method: bytes, http11: bool, keep_alive: bool, started: float) -> None:
        self.method = method
        self.method_str = ""
        self.http11 = http11
        self.keep_alive = keep_alive
        self.started = started
        self.request_id = b""
        self.id_line = b""  # the request id's header line, as forwarded (and sent back with the response)
        self.route: Route | None = None
        self.pool: UpstreamPool | None = None
        self.path = ""
        self.query = ""
        self.target = b""  # path and query as the request line has them (no upstream's base path)
        self.header_lines: list[bytes] = []  # as forwarded, b"Name: value" (no Host, no framing)
        self.header_block = b""  # the same joined by CRLF, as the head carries them
        self.host: bytes | None = None  # the client's Host
        self.head = b""
        self.chunked = False
        self.body_done = False
        self.is_head = False
        self.websocket = False
        self.error: Refusal | None = None
        self.conn: UpConn | None = None
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        self.retried = False
        self.resp_started = False
        self.resp_done = False
        self.finished = False
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.tee: Tee | None = None  # set when shadowing sampled this request
        self.guard: Attempt | None = None  # set when new may fail it over to legacy (proxy.server.fallback)
        # The X-Strangler-Served-By response line of a `target: auto` route's request (proxy.server.canary).
        self.served_by: bytes | None = None


def too_large(limit: int, route: str) -> str:
    """The 413 message for a body over ``limit`` on ``route``."""
    return (
        f"the request body is larger than the {limit} bytes route {route} accepts; send a smaller body "
        "(the limit is routes.yaml limits.max_body, or the gateway's --max-body)"
    )
