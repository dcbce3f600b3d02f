"""Fixtures of the end-to-end tests (defined in e2e_rig.py, which test modules also import helpers from)."""

from e2e_rig import services, system

__all__ = ["services", "system"]
