"""Sample building: a differing exchange made into a stored ``Sample``, redacted and trimmed. No I/O.

Storage keeps a few samples per signature anyway, and building one (decoding, redaction) costs far more
than comparing, so each process builds at most one per route and signature every ``SAMPLE_INTERVAL_S``
(``SampleBuilder.due``, on an injected ``clock``). Stored bodies, values and difference lists are cut to
the ``STORED_*`` sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from proxy.routing.table import ShadowSettings
from proxy.server.exchange import Exchange
from proxy.shadow.compare import Diff, Observed, decode_body
from proxy.shadow.redact import Redactor
from proxy.shadow.store import Sample

__all__ = ["SAMPLE_INTERVAL_S", "STORED_BODY_CHARS", "STORED_DIFFERENCES", "STORED_VALUE_CHARS",
           "SampleBuilder"]  # fmt: skip

STORED_BODY_CHARS: Final = 4096
STORED_VALUE_CHARS: Final = 512
STORED_DIFFERENCES: Final = 50
SAMPLE_INTERVAL_S: Final = 5.0


class SampleBuilder:
    """Builds redacted samples under the global shadow settings, at most one per signature per interval."""

    def __init__(self, settings: ShadowSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.body_cap = settings.body_cap
        self.redactor = Redactor(settings.redact, settings.personal)
        self._clock = clock
        self._sampled_at: dict[tuple[str, str], float] = {}

    def set_settings(self, settings: ShadowSettings) -> None:
        """Adopt reloaded settings (redaction rules, body cap)."""
        self.body_cap = settings.body_cap
        self.redactor = Redactor(settings.redact, settings.personal)

    def due(self, route: str, signature: str) -> bool:
        """Whether a sample of this route and signature should be built now (marks it built)."""
        now = self._clock()
        key = (route, signature)
        last = self._sampled_at.get(key)
        if last is not None and now - last < SAMPLE_INTERVAL_S:
            return False
        if len(self._sampled_at) >= 10000:  # many distinct signatures: forget, rather than grow
            self._sampled_at.clear()
        self._sampled_at[key] = now
        return True

    def build(
        self, ex: Exchange, diff: Diff, control: Observed, candidate: Observed,
        control_raw: bytes, candidate_raw: bytes, control_s: float | None, candidate_s: float | None,
    ) -> Sample:  # fmt: skip
        """The stored form of one differing exchange: path, differences and bodies redacted."""
        r = self.redactor
        differences = [_trim(r.difference(d.as_json())) for d in diff.differences[:STORED_DIFFERENCES]]
        return Sample(
            route=ex.route.name,
            signature=diff.signature,
            method=ex.method,
            path=r.path_qs(ex.path_qs),
            primary=ex.primary,
            control_status=control.status,
            candidate_status=candidate.status,
            diff=differences,
            control_body=self._body(control, control_raw),
            candidate_body=self._body(candidate, candidate_raw),
            control_ms=None if control_s is None else round(control_s * 1000, 3),
            candidate_ms=None if candidate_s is None else round(candidate_s * 1000, 3),
            request_id=ex.request_id.decode("ascii", "replace"),
        )

    def _body(self, obs: Observed, raw: bytes) -> str:
        decoded = decode_body(raw, obs.header("content-encoding"), self.body_cap)
        if decoded is None:
            size = getattr(raw, "size", len(raw))  # a body cut at the cap (Capped) knows its whole size
            return f"<{size} bytes, {obs.header('content-encoding')} encoded>"
        head = decoded[: STORED_BODY_CHARS * 4]  # enough bytes for the stored characters
        return self.redactor.body(head, obs.header("content-type"), STORED_BODY_CHARS)


def _trim(diff: dict[str, Any]) -> dict[str, Any]:
    # A missing subtree can be large: keep each stored value short (as JSON text when cut).
    for side in ("control", "candidate"):
        value = diff.get(side)
        if isinstance(value, dict | list):
            text = orjson.dumps(value).decode()
            if len(text) > STORED_VALUE_CHARS:
                diff[side] = text[:STORED_VALUE_CHARS] + "…"
        elif isinstance(value, str) and len(value) > STORED_VALUE_CHARS:
            diff[side] = value[:STORED_VALUE_CHARS] + "…"
    return diff
