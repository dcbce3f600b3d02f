"""Hot reload of routes.yaml: read, validate, swap atomically or refuse and keep the old table.

:class:`Reloader` is triggered by SIGHUP and by :meth:`Reloader.watch`, which polls the file's
fingerprint (mtime, size, inode) about once a second and reloads when the content hash changes. A
ConfigMap volume swaps a symlink, so the file is always opened by path (following links) rather than
watched by inode. Each distinct content is tried once: an invalid file is counted as one failure, not
one per poll. A reload logs which routes start a new comparison epoch (``epoch_changes``: their target,
methods, path or compare rules changed, see ``Route.fingerprint``), one line per route.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from proxy.ops.admin import AdminState, ReloadStatus
from proxy.ops.logs import event
from proxy.ops.metrics import RELOADS
from proxy.routing.table import ConfigError, Route, RoutesError, RouteTable, parse_routes


def _what_changed(old: Route, new: Route) -> list[str]:
    out = []
    if old.target != new.target:
        out.append(f"target {old.target} -> {new.target}")
    if old.methods != new.methods:
        out.append("methods")
    if old.path != new.path:
        out.append("path")
    if old.compare != new.compare:
        out.append("compare rules")
    return out


def epoch_changes(old: RouteTable, new: RouteTable) -> list[tuple[str, str]]:
    """(route, what changed) for every route of ``new`` that starts a new comparison epoch against
    ``old`` (a route new in the file starts its first)."""
    before = {r.name: r for r in old.routes}
    out = []
    for route in sorted(new.routes, key=lambda r: r.line):
        prior = before.get(route.name)
        if prior is None:
            out.append((route.name, "new route"))
        elif prior.fingerprint != route.fingerprint:
            out.append((route.name, ", ".join(_what_changed(prior, route)) or "configuration"))
    return out


def read_routes(path: str) -> tuple[RouteTable, bytes]:
    """Read and validate ``path``; return the table and the exact bytes it was built from.

    Raises RoutesError for an unreadable, undecodable or invalid file (every error located).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RoutesError([ConfigError(path, 0, "file", f"cannot read the routes file: {reason}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RoutesError([ConfigError(path, line, "file", "the routes file is not valid UTF-8")]) from None
    return parse_routes(text, path), raw


def fingerprint(path: str) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of the file behind ``path`` (links followed), or None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def log_routes_errors(exc: RoutesError, message: str) -> None:
    """One log line per error, each with file:line, so an operator can jump to every problem."""
    for error in exc.errors:
        event(
            message,
            logging.ERROR,
            error=str(error),
            file=error.file,
            line=error.line,
            key=error.key,
            problem=error.message,
        )


class Reloader:
    """Reload the routes file into ``apply`` (e.g. ``gateway.set_table``) and record the outcome."""

    def __init__(
        self,
        path: str,
        state: AdminState,
        apply: Callable[[RouteTable, bytes], None],
        initial_raw: bytes,
    ) -> None:
        self.path = path
        self.state = state
        self._apply = apply
        self._tried = hashlib.sha256(initial_raw).hexdigest()
        self._seen = fingerprint(path)
        for result in ("success", "failure"):
            RELOADS.labels(result)  # exported at 0 from the start, so alerts on rate() see the series

    def reload(self, reason: str) -> bool:
        """Try the file now; True if a new table is live. Never raises for a bad file."""
        self._seen = fingerprint(self.path)
        try:
            # Remember what was tried even if it is invalid: touching a bad file must not recount it.
            self._tried = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        except OSError:
            pass
        try:
            table, raw = read_routes(self.path)
        except RoutesError as exc:
            RELOADS.labels("failure").inc()
            self.state.last_reload = ReloadStatus("failure", time.time(), [str(e) for e in exc.errors])
            log_routes_errors(exc, "routes reload refused; the previous table keeps serving")
            event("routes reload failed", logging.ERROR, reason=reason, errors=len(exc.errors))
            return False
        self._tried = hashlib.sha256(raw).hexdigest()  # the bytes parsed (the file may have moved on)
        if table.sha256 == self.state.table.sha256 and reason == "watch":
            if self.state.last_reload.result == "failure":
                # A bad edit was reverted: the file is the live table again, so the failure is over.
                self.state.last_reload = ReloadStatus("unchanged", time.time())
            return False  # touched but unchanged: nothing to do, nothing to count
        try:
            self._apply(table, raw)
        except Exception as exc:  # a failure to apply is a failed reload, never a dead process
            RELOADS.labels("failure").inc()
            self.state.last_reload = ReloadStatus("failure", time.time(), [f"could not apply: {exc!r}"])
            event("routes reload could not be applied", logging.ERROR, reason=reason, error=repr(exc))
            return False
        changes = epoch_changes(self.state.table, table)
        self.state.table = table
        self.state.last_reload = ReloadStatus("success", time.time())
        for name, what in changes:
            event(f"route {name} starts a new comparison epoch ({what})", route=name, changed=what)
        RELOADS.labels("success").inc()
        event(
            "routes reloaded",
            reason=reason,
            file=self.path,
            sha256=table.sha256,
            routes=len(table.routes),
        )
        return True

    def changed(self) -> bool:
        """True when the file's content differs from the last content tried (cheap when untouched)."""
        seen = fingerprint(self.path)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            raw = Path(self.path).read_bytes()
        except OSError:
            return True  # gone or unreadable: let reload() report it once
        return hashlib.sha256(raw).hexdigest() != self._tried

    async def watch(self, interval: float) -> None:
        """Poll the file every ``interval`` seconds and reload when its content changed (runs forever)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if self.changed():
                    # A file being written in place changes again within moments: wait until it settles,
                    # so a half-written file is not counted as a failed reload.
                    for _ in range(20):
                        await asyncio.sleep(0.05)
                        if fingerprint(self.path) == self._seen:
                            break
                        self._seen = fingerprint(self.path)
                    self.reload("watch")
            except Exception:  # the watcher must outlive any one bad poll
                logging.getLogger("strangler").exception("routes watcher poll failed")
