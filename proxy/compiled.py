"""Which build of the data path runs: the hot modules compiled with mypyc, or their pure-Python sources.

`setup.py` compiles `HOT_MODULES` with mypyc when it can (a C compiler is present, and not
``STRANGLER_PURE_PYTHON=1`` at build time) and records the sha256 of their sources in `MANIFEST`, next to
this file. Importing `proxy` calls `choose` before any of them is imported: the compiled modules are used
only when every one is there and was built from the sources beside it. Otherwise, or with
``STRANGLER_PURE_PYTHON=1`` at run time, a finder loads the hot modules from their ``.py`` files, so a
stale or partial build (an in-place build, then an edit) never runs. `BUILD` says which build runs
(``strangler version``, and the gateway's "listening" log line). Stdlib only: setup.py loads this file by
path, before anything is installed. No I/O beyond reading the sources and the manifest at import.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # mypyc reads the real decorator, and compiled code never calls it (below)
    from mypy_extensions import mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # a pure-Python install has no mypy_extensions: the decorator does nothing

        def mypyc_attr(*attrs, **kwattrs):  # mypy_extensions' signature
            return lambda cls: cls

__all__ = [
    "BUILD", "C_MODULES", "GROUP", "HOT_MODULES", "MANIFEST", "PURE_ENV", "Build", "choose", "decide",
    "mypyc_attr", "sources_digest",
]

# The per-request path (docs/ARCHITECTURE.md, "The path of one GET"). Left out: routing/table.py (its
# frozen dataclass binds `match` per instance; its lookup runs only on a route-cache miss). Shadow's
# `open_sink` (an async generator, which mypyc does not compile) lives in ops/serve.py so admission compiles.
# A compiled class that Python code subclasses (shadow.store's Recording: the stores, the tests' memory
# store) says so with `mypyc_attr(allow_interpreted_subclasses=True)`, imported from here.
HOT_MODULES: tuple[str, ...] = (
    "proxy.http1.headers",
    "proxy.http1.line",
    "proxy.http1.reader",
    "proxy.routing.model",
    "proxy.routing.paths",
    "proxy.routing.template",
    "proxy.upstream.connect",
    "proxy.upstream.request",
    "proxy.upstream.conn",
    "proxy.upstream.pool",
    "proxy.upstream.pipeconn",
    "proxy.upstream.pipe",
    "proxy.upstream.sender",
    "proxy.server.states",
    "proxy.server.config",
    "proxy.server.counters",
    "proxy.server.breaker",
    "proxy.server.fallback",
    "proxy.server.exchange",
    "proxy.server.gateway",
    "proxy.server.forwarding",
    "proxy.server.heads",
    "proxy.server.request",
    "proxy.server.canary",
    "proxy.server.routecache",
    "proxy.server.host",
    "proxy.server.responder",
    "proxy.server.holding",
    "proxy.server.connection",
    "proxy.server.listener",
    "proxy.shadow.admission",
    "proxy.shadow.bytecheck",
    "proxy.shadow.judge",
    "proxy.shadow.noise",
    "proxy.shadow.replay",
    "proxy.shadow.store",
)
# Written in C, built beside the mypyc modules and part of the same build (its source in the digest, its
# extension required): what mypyc cannot make fast, a byte-by-byte scan (http1/_fastresp.c). The pure-Python
# build does without them (the data path checks `BUILD.compiled` before it imports one).
C_MODULES: tuple[str, ...] = ("proxy.http1._fastresp",)
MANIFEST = "_compiled.txt"  # in proxy/, written by the build: the `sources_digest` it compiled
GROUP = "proxy.hot"  # mypyc's group: the shared library proxy/hot__mypyc.*.so holds all the compiled code
PURE_ENV = "STRANGLER_PURE_PYTHON"  # "1": at build time, build no extension; at run time, load the .py
ROOT = Path(__file__).resolve().parent  # the proxy package's directory
REBUILD = "rebuild: make compile (or pip install again)"

log = logging.getLogger("strangler.build")


class Build(NamedTuple):
    """The data path's build: compiled or not, and why not."""

    compiled: bool
    reason: str = ""

    def describe(self) -> str:
        """One line for people: ``yes (mypyc, 36 modules; C, 1)`` or ``no (why)``."""
        if self.compiled:
            return f"yes (mypyc, {len(HOT_MODULES)} modules; C, {len(C_MODULES)})"
        return f"no ({self.reason})"


def source_path(module: str, root: Path = ROOT) -> Path:
    """The source of a `HOT_MODULES` (``.py``) or `C_MODULES` (``.c``) name under the package ``root``."""
    *parents, leaf = module.split(".")[1:]
    return root.joinpath(*parents, leaf + (".c" if module in C_MODULES else ".py"))


def extension_path(module: str, root: Path = ROOT) -> Path | None:
    """The compiled extension of ``module`` under ``root`` for this interpreter, if there is one."""
    source = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def sources_digest(root: Path = ROOT) -> str:
    """The sha256 of the hot modules' and the C modules' sources, names included: what a build compiled."""
    digest = hashlib.sha256()
    for module in (*HOT_MODULES, *C_MODULES):
        digest.update(module.encode("ascii") + b"\0")
        digest.update(source_path(module, root).read_bytes())
    return digest.hexdigest()


def decide(root: Path = ROOT, environ: Mapping[str, str] = os.environ) -> Build:
    """Whether the compiled modules under ``root`` may run, from the environment and the files."""
    if environ.get(PURE_ENV) == "1":
        return Build(False, f"{PURE_ENV}=1")
    built = (*HOT_MODULES, f"{GROUP}__mypyc", *C_MODULES)
    missing = [m for m in built if extension_path(m, root) is None]
    if len(missing) == len(built):
        return Build(False, f"not built: no C compiler at install time, or built with {PURE_ENV}=1")
    if missing:
        return Build(False, f"partial build, {len(missing)} modules not compiled (first {missing[0]}); "
                            f"{REBUILD}")  # fmt: skip
    try:
        recorded = (root / MANIFEST).read_text(encoding="ascii").strip()
    except OSError:
        return Build(False, f"compiled modules without the build's {MANIFEST}; {REBUILD}")
    missing = [m for m in (*HOT_MODULES, *C_MODULES) if not source_path(m, root).is_file()]
    if missing:  # an install that left a source out: nothing to check the build against
        return Build(False, f"a source is missing ({missing[0]}); {REBUILD}")
    if recorded != sources_digest(root):
        return Build(False, f"stale: the sources changed since they were compiled; {REBUILD}")
    return Build(True)


class SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the hot modules from their ``.py`` files even where a compiled extension sits beside them."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.modules = frozenset(HOT_MODULES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname, self.root))


BUILD = Build(False, "not decided yet")


def choose() -> Build:
    """Decide once per process (`proxy/__init__.py`); without the compiled build, import the sources."""
    global BUILD
    BUILD = decide()
    if not BUILD.compiled:
        if not any(isinstance(f, SourceFirst) for f in sys.meta_path):
            sys.meta_path.insert(0, SourceFirst())
        if BUILD.reason.startswith(("partial", "stale", "compiled modules", "a source")):
            log.warning("compiled data path: %s; running the pure-Python modules", BUILD.reason)
    return BUILD
