"""Compiles the data path with mypyc when it can; every other setting is in pyproject.toml.

`pip install .` builds the hot modules (`proxy.compiled.HOT_MODULES`) as C extensions when a C compiler
is present, and falls back to the pure-Python package when it is not, when the compile fails, or when
``STRANGLER_PURE_PYTHON=1`` is set at build time. A successful build records the digest of the sources
it compiled (`proxy.compiled.MANIFEST`); at import, compiled modules that do not match their sources are
not used. In place (``python setup.py build_ext --inplace``, `make compile`, or `pip install -e .`) the
extensions land next to the sources (git-ignored).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
BUILD = runpy.run_path(str(HERE / "proxy" / "compiled.py"))  # stdlib only: nothing is installed yet


def _ext_modules() -> list[Any]:
    if os.environ.get(BUILD["PURE_ENV"]) == "1":
        print(f"strangler: {BUILD['PURE_ENV']}=1: building the pure-Python package", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # a build without the build requirements (setup.py run by hand)
        print(f"strangler: no mypyc ({exc}): building the pure-Python package", file=sys.stderr)
        return []
    paths = [str(BUILD["source_path"](m, Path("proxy"))) for m in BUILD["HOT_MODULES"]]
    try:
        # The shared library (all the compiled code; each module's own .so is a stub) inside the package,
        # proxy/hot__mypyc.*.so: a top-level one would not be found by an editable install's mapping.
        extensions = list(mypycify(paths, opt_level="3", group_name=BUILD["GROUP"]))
    except SystemExit as exc:  # mypyc refused the sources (it prints the type errors and exits)
        print(f"strangler: mypyc failed ({exc}): building the pure-Python package", file=sys.stderr)
        return []
    for module in BUILD["C_MODULES"]:  # the build's C-only modules
        source = BUILD["source_path"](module, Path("proxy"))
        extensions.append(Extension(module, [str(source)], extra_compile_args=["-O3"]))
    return extensions


class OptionalBuildExt(build_ext):
    """Builds the extensions, or none: a failed compile leaves the pure-Python package, with a warning."""

    def run(self) -> None:
        target = HERE if self.inplace or getattr(self, "editable_mode", False) else Path(self.build_lib)
        manifest = target / "proxy" / BUILD["MANIFEST"]
        manifest.unlink(missing_ok=True)
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, a compiler error: the package still works
            print(f"strangler: compiling the data path failed ({exc}); building the pure-Python package "
                  "(slower, same behaviour)", file=sys.stderr)  # fmt: skip
            self.extensions = []
            return
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(BUILD["sources_digest"](HERE / "proxy") + "\n", encoding="ascii")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
