"""What reaches llhttp: `fed_to_parser(conn)` records every read a connection hands its parser from now on.

The client connection (`ClientProtocol`) and the upstream ones (`UpConn`, `PipeConn`) call their parser's
bound `feed_data` through ``_feed``; the data path reads some bytes without it (a remembered request head,
a plain response in the compiled build), and tests check which reads still reach it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def fed_to_parser(conn: Any) -> list[bytes]:
    """Wrap ``conn._feed``; the returned list grows with each read the parser is fed, in order."""
    fed: list[bytes] = []
    feed: Callable[[bytes], None] = conn._feed

    def counting(data: bytes) -> None:
        fed.append(data)
        feed(data)

    conn._feed = counting
    return fed
