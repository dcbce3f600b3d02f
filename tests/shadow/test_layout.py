"""The shadow package's seams hold: only replay.py knows the upstream pools; nothing ships a test double."""

from __future__ import annotations

import ast
from pathlib import Path

SHADOW = Path(__file__).resolve().parents[2] / "proxy" / "shadow"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_only_replay_imports_the_upstream_layer() -> None:
    """Pool types (UpstreamPool, PipePool, Call) are known in replay.py alone, so one upstream interface
    can replace them in one place."""
    def upstream(module: str) -> bool:
        return module == "proxy.upstream" or module.startswith("proxy.upstream.")

    knowing = sorted(p.name for p in SHADOW.glob("*.py") if any(upstream(m) for m in _imports(p)))
    assert knowing == ["replay.py"]


def test_the_product_ships_no_in_memory_store() -> None:
    """MemoryStore lives in tests/support; no shadow module defines or imports it."""
    for path in SHADOW.glob("*.py"):
        assert "MemoryStore" not in path.read_text(), path.name
