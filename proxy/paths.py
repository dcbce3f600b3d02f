"""Canonicalise a request target (skeleton; policy documented in the full version)."""

from __future__ import annotations


class BadPath(ValueError):
    """The request target is refused; ``reason`` says why (sent back as a 400)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def canonicalise(target: bytes) -> tuple[str, str]:
    """Return ``(path, query)`` for an origin-form target or raise BadPath."""
    raise NotImplementedError
