"""Endpoints of an Express app: load it in Node (``express_routes.js``) and translate what its router holds.

The Node script runs with the app's folder as working directory, binds no port and is killed after
``timeout`` seconds; it reports every route with its methods, mount path chain and the file:line that
registered it. Here each route's full Express path is translated (``proxy.routing.express``) into
templates; what cannot be expressed comes back as :class:`Skipped` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from proxy.routing.express import Unexpressible, translate

__all__ = ["DiscoverError", "Endpoint", "ExpressApp", "Skipped", "discover_express", "endpoints_from"]


class DiscoverError(Exception):
    """The app could not be loaded or read; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """One template the app serves: ``methods`` None means any method (``all``, mounted middleware)."""

    template: str
    methods: frozenset[str] | None
    express: str  # the Express path, as the app wrote it (mount paths joined)
    source: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """An Express route that routes.yaml cannot express, and why."""

    express: str
    methods: frozenset[str] | None
    source: str | None
    reason: str


@dataclass(frozen=True)
class ExpressApp:
    """What discovery found: the Express version, endpoints, skipped routes, warnings from loading."""

    version: str
    endpoints: tuple[Endpoint, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]


def _app_root(entry: Path) -> Path:
    """The folder of the nearest package.json above ``entry`` (else its own folder): the app's cwd."""
    for folder in entry.parents:
        if (folder / "package.json").is_file():
            return folder
    return entry.parent


def discover_express(entry: str | Path, *, timeout: float = 30.0, node: str | None = None) -> ExpressApp:
    """Load the Express app ``entry`` in Node and return its endpoints; raise DiscoverError."""
    app = Path(entry).resolve()
    if not app.is_file():
        raise DiscoverError(f"{entry}: no such file; pass the app's main module (the one creating the app)")
    binary = node or shutil.which("node")
    if binary is None:
        raise DiscoverError("node was not found on PATH: install Node.js (18 or later) or pass --node")
    root = _app_root(app)
    script = resources.files("proxy.routing").joinpath("express_routes.js")
    with resources.as_file(script) as script_path, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "routes.json"
        try:
            done = subprocess.run(
                [binary, str(script_path), str(app), str(out)],
                cwd=root,
                env={**os.environ, "NODE_ENV": os.environ.get("NODE_ENV", "development")},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DiscoverError(
                f"{entry}: loading the app took longer than {timeout:g}s (does it wait for a database at "
                "import time?); raise --timeout or point --express at the module that builds the app"
            ) from exc
        if not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise DiscoverError(f"{entry}: node exited with status {done.returncode}: " + " | ".join(tail))
        result: dict[str, Any] = json.loads(out.read_text("utf-8"))
    if "error" in result:
        raise DiscoverError(f"{entry}: {result['error']}")
    return endpoints_from(result, root)


def _text(piece: dict[str, Any]) -> str:
    if "re" in piece:
        return f"/{piece['re']}/{piece.get('flags', '')}"
    if "any" in piece:
        return "[" + ", ".join(_text(p) for p in piece["any"]) + "]"
    return str(piece["s"])


def _alternatives(piece: dict[str, Any]) -> list[dict[str, Any]]:
    """A path array (``app.get(['/a', '/b'], ...)``) is one route per element."""
    if "any" in piece:
        return [alt for p in piece["any"] for alt in _alternatives(p)]
    return [piece]


def _join(pieces: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Mount paths + route path as one Express path, and the reason it cannot be expressed, if any."""
    text = ""
    for piece in pieces:
        if "re" in piece:
            return text + _text(piece), "a regular-expression path: templates have no regexes"
        part = str(piece["s"]).rstrip("/")
        text += part if part.startswith("/") or not part else "/" + part
    return text or "/", None


def _relative(source: str | None, root: Path) -> str | None:
    if not source:
        return None
    file, _, line = source.rpartition(":")
    try:
        return f"{Path(file).relative_to(root)}:{line}"
    except ValueError:
        return source


def endpoints_from(result: dict[str, Any], root: Path) -> ExpressApp:
    """Translate the Node script's JSON (see ``express_routes.js``) into endpoints and skipped routes."""
    version = str(result.get("express", "?"))
    major = int(version.split(".")[0]) if version[:1].isdigit() else 5
    endpoints: list[Endpoint] = []
    skipped: list[Skipped] = []
    for entry in result.get("entries", []):
        methods: frozenset[str] | None = None
        if entry["kind"] == "route" and not entry.get("all"):
            methods = frozenset(entry["methods"])
        source = _relative(entry.get("source"), root)
        path = [*entry["mount"], entry["path"]]
        for combo in _combinations(path):
            express, problem = _join(combo)
            if entry["kind"] == "mount":
                express = express.rstrip("/") + "/*"
                note = f"middleware {entry.get('handler') or '<anonymous>'} mounted at {_join(combo)[0]}"
            else:
                note = ""
            if problem is not None:
                skipped.append(Skipped(express, methods, source, problem))
                continue
            try:
                found = translate(express, major if entry["kind"] == "route" else 4)
            except Unexpressible as exc:
                skipped.append(Skipped(express, methods, source, str(exc)))
                continue
            notes = (note, *found.notes) if note else found.notes
            endpoints.extend(Endpoint(t, methods, express, source, notes) for t in found.templates)
    return ExpressApp(version, tuple(endpoints), tuple(skipped), tuple(result.get("warnings", [])))


def _combinations(pieces: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    combos: list[list[dict[str, Any]]] = [[]]
    for piece in pieces:
        combos = [[*combo, alt] for combo in combos for alt in _alternatives(piece)]
    return combos
