"""Structured logs: one JSON object per line, stdlib logging plus a small formatter.

Loggers: ``strangler`` for events (start, reload, drain), ``strangler.access`` for one line per
request. Pass fields with ``extra={"fields": {...}}``; they are merged into the JSON object.

The gateway itself writes its access lines through :class:`proxy.accesslog.AccessLog` (same line shape,
no logging record, buffered, non-blocking: about 10x cheaper); :func:`access` is the logging-based form
for code off the data path.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

log = logging.getLogger("strangler")
access_log = logging.getLogger("strangler.access")


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: ts, level, logger, msg, pid, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # orjson: an access line is formatted per request, and the stdlib json costs ~15 µs here.
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", access: bool = True, stream: TextIO | None = None) -> None:
    """Send the ``strangler`` loggers to ``stream`` (stderr) as JSON lines, replacing earlier setup."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for logger in (log, logging.getLogger("aiohttp")):
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    log.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel("WARNING")
    # The access logger is a child of `strangler`; disabling it keeps the hot path to one level check.
    access_log.setLevel(logging.INFO if access else logging.CRITICAL + 1)
    access_log.disabled = not access


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event line with extra JSON fields."""
    log.log(level, message, extra={"fields": fields})


def access(
    request_id: str,
    method: str,
    path: str,
    status: int,
    route: str,
    target: str,
    seconds: float,
    **extra: Any,
) -> None:
    """Log one access line (cheap no-op when the access log is off); ``extra`` adds fields."""
    if access_log.disabled:
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "route": route,
        "target": target,
        "duration_ms": round(seconds * 1000, 3),
        **extra,
    }
    # makeRecord + handle skips Logger._log's caller lookup (a stack walk per request on the hot path).
    record = access_log.makeRecord(access_log.name, logging.INFO, "", 0, "request", (), None)
    record.fields = fields
    access_log.handle(record)
