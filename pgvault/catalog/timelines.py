"""Which timeline is production's: recorded when `restore pitr --as-primary` promotes.

`catalog restorable` follows the current timeline at a fork (several children of one
timeline, e.g. an old failover and the restore that replaced it); without a mark it
follows the highest-numbered child, as PostgreSQL's `recovery_target_timeline = latest`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from pgvault.catalog.db import CatalogDB, now_iso


def set_current(catalog: CatalogDB, timeline: int) -> None:
    with catalog.transaction() as conn:
        conn.execute("UPDATE timelines SET is_current = 0 WHERE is_current = 1")
        conn.execute(
            "INSERT INTO timelines(timeline, is_current, recorded_at) VALUES (?, 1, ?) "
            "ON CONFLICT(timeline) DO UPDATE SET is_current = 1",
            (timeline, now_iso()),
        )


def current(catalog: CatalogDB) -> int | None:
    value = catalog.scalar("SELECT timeline FROM timelines WHERE is_current = 1")
    return int(value) if value is not None else None


def record_history(conn: sqlite3.Connection, meta: Mapping[str, Any]) -> None:
    """A verified history file: timeline, parent, switch point (keeps `is_current`)."""
    if "timeline" not in meta:
        return
    conn.execute(
        "INSERT INTO timelines(timeline, parent, switchpoint, reason, is_current, recorded_at) "
        "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT(timeline) DO UPDATE SET parent=excluded.parent, "
        "switchpoint=excluded.switchpoint, reason=excluded.reason",
        (
            meta["timeline"],
            meta.get("parent"),
            meta.get("switchpoint"),
            meta.get("reason"),
            now_iso(),
        ),
    )
