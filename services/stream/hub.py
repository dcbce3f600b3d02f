"""The post event feed, shared through Redis by every instance of either service (docs/API.md, Events).

A created post is published with one script: XADD to the stream ``<prefix>posts:stream`` (capped by
``STREAM_HISTORY_MAX``, the history a ``Last-Event-ID`` resumes from) and PUBLISH of ``"<id> <json>"``
on ``<prefix>posts:live``. Each process holds ONE pub/sub connection and fans the live events out to
its subscribers' bounded queues; a subscriber that falls behind is dropped (it reconnects and resumes).
After a lost pub/sub connection the hub re-reads the stream from the last id it saw, so no live
subscriber misses an event published meanwhile. The legacy app does the same (legacy/src/stream.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("services.stream")

EventKey = tuple[int, int]
_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_PAGE = 500
_QUEUE_MAX = 1024
_RETRY_S = 0.5
_POLL_S = 0.2  # how soon close() is noticed by the listener

# XADD then PUBLISH in one atomic step: an event is in the history before any live reader sees it.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'post', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""


def parse_id(raw: str | None) -> EventKey | None:
    """A Redis stream id (``"<ms>-<seq>"``) as a comparable key, or None when it is not one."""
    match = _ID_RE.fullmatch(raw.strip()) if raw else None
    return (int(match[1]), int(match[2])) if match else None


class Event:
    """One created post: its stream id, its JSON (the 201 body of its creation) and both wire forms,
    built once per event (not once per subscriber)."""

    __slots__ = ("data", "id", "key", "sse", "ws")

    def __init__(self, event_id: str, key: EventKey, data: bytes) -> None:
        self.id, self.key, self.data = event_id, key, data
        # The server-sent event and the WebSocket text message, byte for byte.
        self.sse = b"id: " + event_id.encode() + b"\nevent: post\ndata: " + data + b"\n\n"
        self.ws = '{"type":"post","id":"' + event_id + '","post":' + data.decode() + "}"


class Subscription:
    """One client's queue of live events; ``None`` in it means: stop (shutdown, or fell behind)."""

    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUE_MAX + 1)
        self.overflowed = False

    def offer(self, item: Event | None) -> None:
        if self.overflowed:
            return
        if item is not None and self.queue.qsize() >= _QUEUE_MAX:
            self.overflowed = True
            item = None
        self.queue.put_nowait(item)


@dataclass
class Gauges:
    """Open streams and sockets, and clients dropped for being slow or dead (``GET /health/streams``)."""

    sse_open: int = 0
    ws_open: int = 0
    slow_dropped: int = 0
    dead_dropped: int = 0


class Hub:
    """The process's pub/sub listener and its subscribers."""

    def __init__(self, redis_url: str, prefix: str, history_max: int) -> None:
        # Its own client: a pub/sub connection waits indefinitely, without the command socket timeout.
        # Named, so an operator (or a test) can find it in CLIENT LIST.
        self.client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2.0, health_check_interval=30,
                                              client_name=f"{prefix}stream-hub")
        self.stream_key = f"{prefix}posts:stream"
        self.channel = f"{prefix}posts:live"
        self.history_max = history_max
        self.gauges = Gauges()
        self._publish = self.client.register_script(_PUBLISH)
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start listening (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="stream-hub")

    async def close(self) -> None:
        """Stop listening, end every subscription, close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        for sub in list(self._subs):
            sub.offer(None)
        if self._task is not None:
            await self._task  # it notices within _POLL_S (see _listen)
        await self.client.aclose()

    async def publish(self, post_json: bytes) -> str:
        """Append a created post to the history and announce it; returns its event id."""
        raw = await self._publish(keys=[self.stream_key, self.channel], args=[self.history_max, post_json])
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def subscribe(self) -> Subscription:
        """A new subscription to live events (``None`` right away if the hub is closing)."""
        sub = Subscription()
        if self._closed:
            sub.offer(None)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription (idempotent)."""
        self._subs.discard(sub)

    async def history(self, after: EventKey) -> AsyncIterator[Event]:
        """Every event still in the history with an id after `after`, oldest first, by pages."""
        start = f"({after[0]}-{after[1]}"
        while True:
            rows: list[Any] = await self.client.xrange(self.stream_key, min=start, max="+", count=_PAGE) or []
            for raw_id, fields in rows:
                event_id = raw_id.decode()
                key = parse_id(event_id)
                if key is not None:
                    yield Event(event_id, key, bytes(fields[b"post"]))
            if len(rows) < _PAGE:
                return
            start = "(" + rows[-1][0].decode()

    def _fan_out(self, event: Event) -> None:
        for sub in self._subs:
            sub.offer(event)

    async def _listen(self) -> None:
        # get_message() with a short timeout rather than a cancelled listen(): cancelling a blocked pub/sub
        # read can leave redis-py's teardown waiting forever on the pub/sub lock (seen with redis-py 8.2).
        last: EventKey | None = None
        while not self._closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if last is not None:  # re-subscribed: replay what was published while away
                    async for event in self.history(last):
                        self._fan_out(event)
                        last = event.key
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S)
                    if message is None:
                        continue
                    event_id, _, data = bytes(message["data"]).partition(b" ")
                    key = parse_id(event_id.decode())
                    if key is None or (last is not None and key <= last):
                        continue
                    last = key
                    self._fan_out(Event(event_id.decode(), key, data))
            except (RedisError, OSError) as exc:
                if self._closed:
                    break
                log.warning("stream pub/sub connection lost, resubscribing", extra={"err": repr(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RETRY_S)
            finally:
                await pubsub.aclose()
