"""Replay: a shadow copy of a request sent to the other side, and its answer handed to the judge. Does I/O.

Every copy goes through one interface, ``proxy.upstream.sender.Sender``, made once per upstream pool by
``sender_for``: it pipelines a GET without a body and sends anything else as a buffered call, or, for a
pool-like object of another kind (a ``Fetcher``), awaits it in a task. Shadowing knows no pool type. No
task, future or timer per copy: the owner's periodic ``sweep`` enforces the deadlines. Requests that
change data are sent only to the candidate, signed as a dry run (``proxy.shadow.dryrun``), and only
*before* their primary (``prewrite``, for ``proxy.shadow.prewrite``): a copy made after the primary
(``call``) is never a write.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Final, cast

from proxy.routing.table import RouteTable, UpstreamSpec
from proxy.server.exchange import Exchange, Headers, header_pairs
from proxy.shadow import dryrun
from proxy.shadow.bytecheck import same_headers
from proxy.shadow.judge import CANDIDATE, CONTROL, SAFE, Failed, Fetched, Job, Judge
from proxy.shadow.store import DiffStore
from proxy.upstream.pipe import Expected, PipeCall
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.sender import Fetcher, PoolSender, Sender, Sent, sender_for

__all__ = ["Fetcher", "OwnPool", "Pool", "Replayer", "Sent", "close_pools", "open_pools"]

# What a shadow copy can go out on (any Fetcher), and what open_pools makes; only this module knows them.
Pool = UpstreamPool | Fetcher
OwnPool = UpstreamPool

# Request headers never replayed: the pool sets framing itself, and a client must not smuggle a dry run.
_DROP_HEADERS: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade",
     b"te", b"trailer", b"proxy-connection", b"x-strangler-dry-run"}
)  # fmt: skip


def open_pools(upstreams: Mapping[str, UpstreamSpec]) -> dict[str, UpstreamPool]:
    """Pools of the shadow's own, one per upstream, separate from the data path's."""
    return {name: UpstreamPool(spec) for name, spec in upstreams.items()}


def close_pools(pools: Mapping[str, UpstreamPool]) -> None:
    """Close the shadow's own pools (`open_pools`)."""
    for pool in pools.values():
        pool.close()


def _replayed(ex: Exchange) -> Headers:
    """The request headers a shadow call sends: the forwarded ones less `_DROP_HEADERS`."""
    return [(k, v) for k, v in ex.request_headers if k.lower() not in _DROP_HEADERS]


class Replayer:
    """Sends shadow copies through one `Sender` per upstream, and settles each answer with the judge.

    ``pools`` are by upstream name; with ``own_pools`` they are this replayer's, replaced on reload when
    their upstream changes. A sender is made for a pool the first time a copy goes to it; a sender whose
    pool was replaced is retired: it takes no more copies and is swept until its copies have ended.
    """

    def __init__(
        self, pools: Mapping[str, UpstreamPool | Fetcher], store: DiffStore, judge: Judge,
        job_done: Callable[[], None], *, secret: bytes | None, max_conns: int, body_cap: int,
        own_pools: bool = False,
    ) -> None:  # fmt: skip
        self.pools = pools
        # With own_pools the caller hands over pools it made with `open_pools` (UpstreamPools, by contract):
        # this replayer replaces them on reload, and they are closed with `close_pools(own_pools)`.
        self.own_pools: dict[str, UpstreamPool] = (
            dict(cast(Mapping[str, UpstreamPool], pools)) if own_pools else {}
        )
        self.store = store
        self._counts = store.tally  # counted without a by-name call (see proxy.shadow.store.Tally)
        self.secret = secret
        self._body_cap = body_cap  # bytes of a body compared byte for byte (see one_done), and kept
        self._max_conns = max_conns
        self._senders: dict[str, tuple[UpstreamPool | Fetcher, Sender]] = {}
        self._retired: list[Sender] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] | None = None  # the pipelined calls' (see start)
        self._judge = judge  # compiled and never subclassed: its methods are called natively
        self._job_done = job_done

    @property
    def body_cap(self) -> int:
        """Bytes of a body compared byte for byte; the senders keep at most one more (then hash)."""
        return self._body_cap

    @body_cap.setter
    def body_cap(self, cap: int) -> None:
        # The senders' collectors follow at once, so that a body they kept whole is never over this cap.
        self._body_cap = cap
        for _, sender in self._senders.values():
            sender.set_body_cap(cap)

    def start(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] | None = None) -> None:
        """Bind to the running loop (senders need it); ``clock`` times the pipelined calls (their deadlines
        and latencies; the loop's by default), the one the owner's sweep reads."""
        self._loop = loop
        self._clock = clock

    def set_table(self, table: RouteTable) -> None:
        """Adopt a reloaded table: own pools are replaced for the upstreams that changed (their senders
        follow), and any sender whose upstream changed is retired."""
        if self.own_pools:
            old = self.own_pools
            fresh: dict[str, UpstreamPool] = {}
            for name, spec in table.upstreams.items():
                pool = old.get(name)
                fresh[name] = pool if pool is not None and pool.spec == spec else UpstreamPool(spec)
            for name, pool in old.items():
                if fresh.get(name) is not pool:
                    pool.close()
            self.own_pools = fresh
            self.pools = fresh
        for name, (owner, _) in list(self._senders.items()):
            if self.pools.get(name) is not owner:
                self._retire(name)

    def _retire(self, name: str) -> None:
        _, sender = self._senders.pop(name)
        sender.close()  # copies in flight finish; new ones get a new sender
        self._retired.append(sender)

    def _sender(self, side: str) -> Sender | None:
        """The sender to ``side``: made on first use, remade when the side's pool was replaced."""
        pool = self.pools.get(side)
        if pool is None:
            return None
        entry = self._senders.get(side)
        if entry is not None:
            if entry[0] is pool:
                return entry[1]
            self._retire(side)
        assert self._loop is not None
        sender = sender_for(
            pool, self._loop, name=side, max_conns=self._max_conns, clock=self._clock, body_cap=self._body_cap
        )
        self._senders[side] = (pool, sender)
        return sender

    def sweep(self, now: float) -> None:
        """Fail the copies past their deadline (``now`` on the loop's clock, as the copies' deadlines)."""
        for _, sender in list(self._senders.values()):  # an expiry's callback may make a new sender
            sender.sweep(now)
        if self._retired:
            for sender in list(self._retired):
                sender.sweep(now)
            self._retired = [s for s in self._retired if getattr(s, "busy", False)]

    def close(self) -> None:
        """Drop every copy in flight without settling it (shutdown)."""
        for _, sender in self._senders.values():
            sender.close(abort=True)
        for sender in self._retired:
            sender.close(abort=True)
        self._senders.clear()
        self._retired.clear()

    def pipe_get(
        self, ex: Exchange, side: str, limit: float, done: Callable[[Sent], None], compare: bool = False
    ) -> bool:
        """Send a GET without a body to ``side`` from the forwarded header lines as they are; False when
        there is no such upstream. ``compare``: the copy expects the exchange's answer (`Expected`, with
        the route's compared header names), for a ``done`` that reads a `PipeCall`'s ``same`` (`one_done`
        does)."""
        entry = self._senders.get(side)
        pools = self.pools
        if isinstance(pools, dict):  # a dict's get is native, a Mapping's by name (`open_pools` makes a dict)
            pool = pools.get(side)
        else:
            pool = pools.get(side)
        sender = entry[1] if entry is not None and entry[0] is pool else self._sender(side)
        if sender is None:
            return False
        # The data path's lines hold none of _DROP_HEADERS: no Host, framing or hop-by-hop header, and no
        # client's X-Strangler-Dry-Run (proxy.server.forwarding drops it from every request it forwards).
        # The lines and target as the data path joined and encoded them for the primary.
        head = ex.header_block
        target = ex.target_bytes
        expect: Expected | None = None
        if compare:
            ex.compared = self._judge.compared_names(ex.route.compare)
            expect = ex
        if isinstance(sender, PoolSender):  # compiled, a native call (through the Protocol it is by name)
            sender.send_get(target, head, limit, done, ex, ex.client_host, expect)
        else:
            sender.send_get(target, head, limit, done, ex, ex.client_host, expect)
        return True

    def one_done(self, call: Sent) -> None:
        """The other side's answer to a job of one pipelined GET (``pipe_get``'s ``done``).

        Identical answers (the common case) are counted here: an answer found to be the primary's where it
        was read (a `PipeCall`'s ``same``: `pipe_get`'s ``compare``), or by the judge's byte check,
        inlined; anything else goes the general way (``Judge.settle``).
        """
        # The same four reads either way: on a PipeCall (nearly always) compiled code reads them natively,
        # through the Sent Protocol it looks each up by name.
        same = False
        if isinstance(call, PipeCall):
            tag, result, exc, seconds, same = call.tag, call.result, call.error, call.latency, call.same
        else:  # another sender's: never given ``expect``
            tag, result, exc, seconds = call.tag, call.result, call.error, call.latency
        ex: Exchange = tag  # type: ignore[assignment]  # set by pipe_get
        other = CANDIDATE if ex.primary == CONTROL else CONTROL
        res: Fetched | Failed
        if same:  # the primary's status, body and compared headers (its very bytes, maybe)
            body = ex.response_body or b""  # (teed: a copy expects the answer only then)
            if len(body) <= self._body_cap:
                self._matched(ex, other, seconds)
                return
            # The cap shrank since (a reload): compared by hash, the primary's answer standing for the
            # copy's, which had its status, body and every header the comparison reads.
            res = (ex.status, ex.response_headers, body, seconds)
        elif result is None:
            assert exc is not None
            res = Failed(other, f"{exc.kind}: {exc.message}")
        else:
            status, headers, body = result
            # `identical` without building its tuples (this runs for every compared GET).
            names, lengths = self._judge.identity(ex.route.compare)
            if (
                status == ex.status
                and body == ex.response_body
                and len(body) <= self._body_cap  # a capped body (over it) is compared by hash
                and same_headers(ex.response_headers, headers, names, lengths)
            ):
                self._matched(ex, other, seconds)
                return
            res = (status, headers, body, seconds)
        self._judge.settle(Job(ex, other, 1), "other", res)

    def _matched(self, ex: Exchange, other: str, seconds: float | None) -> None:
        """Count the exchange's comparison as matched (``seconds``: the other side's latency)."""
        tally = self._counts
        key = ex.key or tally.key(ex.route, ex.method)  # made by `Shadower.submit`
        if other == CANDIDATE:
            tally.matched(key, ex.latency_s, seconds, ex.status)
        else:
            tally.matched(key, seconds, ex.latency_s, ex.status)
        self._judge.matched(ex.route.name)
        self._job_done()

    def call(self, job: Job, key: str, side: str, limit: float) -> None:
        """Send one of a job's calls to ``side``; its result is settled with the judge."""
        ex = job.ex
        body = ex.request_body or b""
        done = functools.partial(self._called, job, key, side)
        if ex.method == "GET" and not body:
            if not self.pipe_get(ex, side, limit, done):
                self._judge.settle(job, key, Failed(side, f"no upstream named {side!r}"))
            return
        sender = self._sender(side)
        if sender is None:
            self._judge.settle(job, key, Failed(side, f"no upstream named {side!r}"))
            return
        if ex.method not in SAFE:  # a write's dry run ran before its primary (prewrite), never after
            self._judge.settle(job, key, Failed(side, "a write is dry-run before its primary only"))
            return
        sender.send(ex.method, ex.path_qs, _replayed(ex), body, limit, done, ex, ex.client_host)

    def prewrite(
        self, method: str, path_qs: str, lines: list[bytes], body: bytes, host: bytes | None,
        limit: float, done: Callable[[Sent], None], tag: object,
    ) -> bool:  # fmt: skip
        """Send a write to the candidate as a signed dry run, before its primary; False when there is no
        candidate upstream or no secret to sign with."""
        sender = self._sender(CANDIDATE)
        if sender is None or self.secret is None:
            return False
        headers = [(k, v) for k, v in header_pairs(lines) if k.lower() not in _DROP_HEADERS]
        signature = dryrun.sign(self.secret, method, path_qs, body)
        headers.append((dryrun.HEADER.encode(), signature.encode()))
        sender.send(method, path_qs, headers, body, limit, done, tag, host)
        return True

    def _called(self, job: Job, key: str, side: str, sent: Sent) -> None:
        res: Fetched | Failed
        result = sent.result
        if result is not None:
            status, headers, body = result
            res = (status, headers, body, sent.latency)
        else:
            exc = sent.error
            assert exc is not None
            res = Failed(side, f"{exc.kind}: {exc.message}")
        self._judge.settle(job, key, res)
