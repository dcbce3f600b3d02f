"""Fixtures of the shadow tests (defined in shadow_rig.py, which test modules also import helpers from)."""

from .shadow_rig import backends, make_rig, shadow_db

__all__ = ["backends", "make_rig", "shadow_db"]
