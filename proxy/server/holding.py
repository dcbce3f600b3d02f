"""Sampled writes held for new's dry run: `Holder`, between `Responder` and `ClientProtocol`.

A write shadowing sampled (a request other than GET/HEAD on a route served by legacy with
``shadow.writes: true``) is compared with new's *dry run* of it, and that dry run must see the state the
primary sees: so it runs first. The request is held (its body buffered in ``rq.pending``, as for an
upstream connection not open yet) until its body is complete, then the shadow is asked for the dry run
(`ShadowSink.prewrite`), and the primary is forwarded when the dry run has answered, failed or timed out
(the shadow's deadline: at most the route's shadow timeout). The shadow's handle goes to the exchange
with the primary's response, and the judge compares the two.

Giving up forwards at once, as if unsampled, and counts the write as not compared
(``not_comparable(route, "write_<reason>")``): a body over the shadow's body cap or over the pending-body
limit (the gateway would stream it, or pause reading), a client waiting for ``100 Continue``, a shadow
that declines (it counts why) or fails. Nothing here runs for an unsampled request: `Responder._start`
checks ``rq.tee`` once.
"""

from __future__ import annotations

import functools
import logging
from time import perf_counter
from typing import Final

from proxy.server.request import Request
from proxy.server.responder import Responder

__all__ = ["ASKED", "NO_HOLD", "WAIT_BODY", "Holder"]

log = logging.getLogger("strangler.server")

NO_HOLD: Final = 0
WAIT_BODY: Final = 1  # held: the body is still arriving
ASKED: Final = 2  # held: the dry run is out


class Holder(Responder):
    """The hold of a sampled write until its dry run answered (a base class of `ClientProtocol`)."""

    def _hold(self, rq: Request) -> None:
        """``rq`` (current, held) starts: ask for the dry run now, or when its body is complete."""
        tee = rq.tee
        assert tee is not None
        if tee.req is None or rq.pending_size > self.gateway.settings.pending_body_limit:
            self._give_up(rq, "write_body")
        elif rq.body_done:
            self._ask(rq)
        elif _expects_continue(rq.header_lines):
            self._give_up(rq, "write_expect")  # the client waits for the upstream's 100 before the body

    def _body_complete(self, rq: Request) -> None:
        """The held current request's body has arrived whole."""
        self._ask(rq)

    def _ask(self, rq: Request) -> None:
        tee = rq.tee
        shadow = self.gateway.shadow
        route = rq.route
        assert tee is not None and tee.req is not None and route is not None
        if shadow is None:
            self._release(rq)
            return
        tee.hold = ASKED
        tee.held = perf_counter()
        path_qs = rq.path + "?" + rq.query if rq.query else rq.path
        body = b"".join(tee.req)
        try:
            handle = shadow.prewrite(
                route, rq.method_str, path_qs, rq.header_lines, body, rq.host,
                functools.partial(self._prewritten, rq),
            )  # fmt: skip
        except Exception:
            log.exception("shadow prewrite failed")
            handle = None
        if handle is None:
            if tee.hold == ASKED:  # declined (the shadow counted why): forward as if not held
                self._release(rq)
            return
        tee.prewrite = handle

    def _prewritten(self, rq: Request) -> None:
        """The dry run of ``rq`` answered, failed or timed out: forward the primary now."""
        tee = rq.tee
        if tee is None or tee.hold != ASKED or self.cur is not rq or rq.finished:
            return  # the client went away meanwhile
        self._release(rq)

    def _give_up(self, rq: Request, reason: str) -> None:
        """Forward a held request now, without a dry run; its copy is dropped and counted as not compared."""
        rq.tee = None
        shadow = self.gateway.shadow
        if shadow is not None and rq.route is not None:
            try:
                shadow.not_comparable(rq.route, reason)
            except Exception:
                log.exception("shadow not_comparable failed")
        if self.cur is rq:
            self._forward(rq)

    def _release(self, rq: Request) -> None:
        tee = rq.tee
        if tee is not None:
            if tee.hold == ASKED:  # the wait is the dry run's, not the primary's latency
                tee.held = perf_counter() - tee.held
            tee.hold = NO_HOLD
        if self.cur is rq and not rq.finished:
            self._forward(rq)


def _expects_continue(lines: list[bytes]) -> bool:
    for line in lines:
        if line[:7].lower() == b"expect:":
            return True
    return False
