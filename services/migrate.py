"""The example's migrations (``strangler migrate``): the engine is the gateway's (`proxy.shadow.migrator`)
and so is the command line (`proxy.shadow.migrate_cli`); these names stay for the example and its tests.
"""

from __future__ import annotations

from proxy.shadow.migrate_cli import main
from proxy.shadow.migrator import LOCK_KEY, Migration, MigrationError, discover, migrate, migrate_gateway

__all__ = ["LOCK_KEY", "Migration", "MigrationError", "discover", "main", "migrate", "migrate_gateway"]
