"""Which timeline is production's: recorded when `restore pitr --as-primary` promotes.

`catalog restorable` follows the current timeline at a fork (several children of one
timeline, e.g. an old failover and the restore that replaced it); without a mark it
follows the highest-numbered child, as PostgreSQL's `recovery_target_timeline = latest`.
"""

from __future__ import annotations

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.transitions import record_history
from pgvault.catalog.transitions import set_current_timeline as set_current


def current(catalog: CatalogDB) -> int | None:
    value = catalog.scalar("SELECT timeline FROM timelines WHERE is_current = 1")
    return int(value) if value is not None else None


__all__ = ["current", "record_history", "set_current"]
