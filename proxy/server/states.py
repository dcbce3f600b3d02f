"""The named states of a client connection (`proxy.server.connection.ClientProtocol`).

Ints, not an Enum: the state is read on every ``data_received`` and compared on the hot path, and an int
compare against a module constant costs what the boolean checks it replaced did. The order matters:
every state above `BODY` stops the request parser being fed.

    IDLE ──head starts──▶ HEAD ──head complete──▶ BODY ──message complete──▶ IDLE (next request)
                            │                       │
                            └─refused─▶ CLOSING ◀───┘ (refused, or the client half-closed)
    IDLE ──WebSocket request parsed──▶ UPGRADE ──upstream's 101──▶ TUNNEL
    any ──closed or lost──▶ CLOSED

Orthogonal to the state, three flags say who is paused (backpressure): the client's reading
(``reading_paused``), the upstream taking the request body (``up_paused``), the client taking the
response (``write_paused``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BODY", "CLOSED", "CLOSING", "HEAD", "IDLE", "NAMES", "TUNNEL", "UPGRADE"]

IDLE: Final = 0  # between requests: the next head has not started
HEAD: Final = 1  # reading a request head (the header timeout applies)
BODY: Final = 2  # the head was accepted; its body is being streamed upstream
UPGRADE: Final = 3  # a WebSocket request was parsed: bytes go upstream unparsed until its answer
TUNNEL: Final = 4  # the upstream said 101: a byte tunnel both ways
CLOSING: Final = 5  # no more requests are read (refused, or the client half-closed): close once answered
CLOSED: Final = 6  # closed or lost: nothing more is written

NAMES = ("idle", "head", "body", "upgrade", "tunnel", "closing", "closed")  # for logs and tests
