"""The compiled data path (proxy/compiled.py, setup.py): which build runs, and that it is the one asked for.

`make test` sets STRANGLER_EXPECT_COMPILED=1 when a C compiler and Python's headers are there: then every
hot module must really be an extension. `make test-pure` (STRANGLER_PURE_PYTHON=1) must get the sources.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy import compiled
from proxy.compiled import C_MODULES, HOT_MODULES, MANIFEST, PURE_ENV, decide, sources_digest

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = tuple(importlib.machinery.EXTENSION_SUFFIXES)
EVERY = len(HOT_MODULES) + 1 + len(C_MODULES)  # the extensions of a whole build: the shared library too


def _loaded_from(module: str) -> str:
    return str(importlib.import_module(module).__file__)


@pytest.mark.skipif(os.environ.get("STRANGLER_EXPECT_COMPILED") != "1", reason="no compiled build asked for")
def test_every_hot_module_is_compiled_when_a_compiler_is_there() -> None:
    """The build `make test` asked for is the one that runs: no module silently left as Python."""
    assert compiled.BUILD.compiled, compiled.BUILD.describe()
    assert [m for m in (*HOT_MODULES, *C_MODULES) if not _loaded_from(m).endswith(EXTENSION)] == []


@pytest.mark.skipif(os.environ.get(PURE_ENV) != "1", reason="not the pure-Python run")
def test_the_pure_run_imports_every_hot_module_from_source() -> None:
    """STRANGLER_PURE_PYTHON=1 at run time tests the .py files even where extensions sit beside them."""
    assert not compiled.BUILD.compiled
    assert [m for m in HOT_MODULES if not _loaded_from(m).endswith(".py")] == []


def test_pure_python_at_run_time_loads_the_sources_in_a_fresh_process() -> None:
    """The switch works in a process of its own, whatever this one runs, and says so."""
    probe = textwrap.dedent("""
        import json, proxy.compiled as c
        import proxy.server.connection, proxy.upstream.conn, proxy.http1.reader
        print(json.dumps([c.BUILD.describe(), proxy.server.connection.__file__, proxy.upstream.conn.__file__,
                          proxy.http1.reader.__file__]))
    """)
    env = {**os.environ, PURE_ENV: "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    described, *files = __import__("json").loads(done.stdout)
    assert described == f"no ({PURE_ENV}=1)"
    assert all(f.endswith(".py") for f in files), files


def _fake_package(root: Path, extensions: int) -> Path:
    """A proxy/ directory with every hot and C module's source and the first ``extensions`` "compiled" ones
    (the shared library first, the C modules last)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for i, module in enumerate((*HOT_MODULES, *C_MODULES)):
        source = compiled.source_path(module, root)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"X = {i}\n")
    for module in (f"{compiled.GROUP}__mypyc", *HOT_MODULES, *C_MODULES)[:extensions]:
        source = compiled.source_path(module, root)
        source.with_name(source.stem + suffix).write_bytes(b"not really an extension")
    return root


def test_a_complete_build_of_these_sources_is_used(tmp_path: Path) -> None:
    root = _fake_package(tmp_path, EVERY)
    (root / MANIFEST).write_text(sources_digest(root) + "\n")
    assert decide(root, {}) == compiled.Build(True)
    assert decide(root, {PURE_ENV: "1"}) == compiled.Build(False, f"{PURE_ENV}=1")


def test_an_edited_source_makes_the_build_stale(tmp_path: Path) -> None:
    """An in-place build, then an edit: the extension no longer is that source, so the source runs."""
    for edited in (HOT_MODULES[-1], *C_MODULES):
        root = _fake_package(tmp_path / edited, EVERY)
        (root / MANIFEST).write_text(sources_digest(root) + "\n")
        compiled.source_path(edited, root).write_text("X = 'edited'\n")
        built = decide(root, {})
        assert not built.compiled and built.reason.startswith("stale"), edited


def test_a_build_without_a_source_is_not_used(tmp_path: Path) -> None:
    """An install that left a source out (a wheel without the C module's source) runs the sources, and
    importing does not fail."""
    root = _fake_package(tmp_path, EVERY)
    (root / MANIFEST).write_text(sources_digest(root) + "\n")
    compiled.source_path(C_MODULES[0], root).unlink()
    built = decide(root, {})
    assert not built.compiled and "missing" in built.reason and C_MODULES[0] in built.reason


def test_a_partial_or_unrecorded_build_is_not_used(tmp_path: Path) -> None:
    root = _fake_package(tmp_path, len(HOT_MODULES))
    (root / MANIFEST).write_text(sources_digest(root) + "\n")
    partial = decide(root, {})
    assert not partial.compiled and HOT_MODULES[-1] in partial.reason
    no_c = _fake_package(tmp_path / "no-c", EVERY - len(C_MODULES))
    (no_c / MANIFEST).write_text(sources_digest(no_c) + "\n")
    assert C_MODULES[0] in decide(no_c, {}).reason
    no_shared = _fake_package(tmp_path / "no-shared", EVERY)
    next(no_shared.glob("hot__mypyc.*")).unlink()
    (no_shared / MANIFEST).write_text(sources_digest(no_shared) + "\n")
    assert "hot__mypyc" in decide(no_shared, {}).reason
    whole = _fake_package(tmp_path / "other", EVERY)
    assert decide(whole, {}).reason.startswith("compiled modules without")
    assert decide(_fake_package(tmp_path / "none", 0), {}).reason.startswith("not built")


def test_strangler_version_names_the_build() -> None:
    """`strangler version` prints the version and which data path this process would run."""
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "version"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("strangler ")
    assert lines[1] == f"compiled data path: {compiled.BUILD.describe()}"


def test_python_subclasses_of_compiled_classes_need_no_mypy_extensions() -> None:
    """mypy_extensions is a build requirement only: without it `mypyc_attr` does nothing, and the stores'
    Python subclass of `Recording` (compiled, marked for interpreted subclasses) still works."""
    probe = textwrap.dedent("""
        import sys
        class NoMypyExtensions:
            def find_spec(self, name, path, target=None):
                if name == "mypy_extensions":
                    raise ImportError("not installed")
        sys.meta_path.insert(0, NoMypyExtensions())
        from proxy.shadow.store import Recording
        class Store(Recording):
            def seen(self):
                return self.take().incr[("c", "k", "seen")]
        store = Store()
        store.count("k", "seen", 2)
        print(store.seen(), "mypy_extensions" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False"]
