"""``strangler routes check FILE``: lint a routes file and print the resolved table."""

from __future__ import annotations

import sys
from typing import TextIO


def check(path: str, out: TextIO = sys.stdout) -> int:
    """Lint ``path``; print the table (0) or every error (1)."""
    raise NotImplementedError
