"""Per-request state of the data path (`Request`) and the refusal raised from parser callbacks."""

from __future__ import annotations

from proxy.routing.table import Route
from proxy.upstream.pool import Headers, UpConn, UpstreamPool

__all__ = ["Refusal", "Request"]


class Refusal(Exception):
    """A request the gateway answers itself with an error status and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id: bytes = b""


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
        "head",
        "header_lines",
        "http11",
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
        "resp_headers",
        "resp_started",
        "retried",
        "route",
        "started",
        "status",
        "tee_cap",
        "tee_over",
        "tee_req",
        "tee_req_size",
        "tee_resp",
        "tee_resp_over",
        "tee_resp_size",
        "websocket",
    )

    def __init__(self, method: bytes, http11: bool, keep_alive: bool, started: float) -> None:
        self.method = method
        self.method_str = ""
        self.http11 = http11
        self.keep_alive = keep_alive
        self.started = started
        self.request_id = b""
        self.route: Route | None = None
        self.pool: UpstreamPool | None = None
        self.path = ""
        self.query = ""
        self.header_lines: list[bytes] = []  # as forwarded, b"Name: value" (no Host, no framing)
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
        self.resp_headers: Headers = []
        self.tee_cap = 0
        self.tee_req: list[bytes] | None = None
        self.tee_req_size = 0
        self.tee_over = False
        self.tee_resp: list[bytes] | None = None
        self.tee_resp_size = 0
        self.tee_resp_over = False
