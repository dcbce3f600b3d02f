"""The report tests read the stores the shadow tests write: they share its database fixture."""

from shadow.shadow_rig import shadow_db

__all__ = ["shadow_db"]
