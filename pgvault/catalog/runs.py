"""Backup runs and restore drills: what was attempted, how long it took, how it ended.

Producers (backup logical/physical) record one row per attempt in `backup_runs`, whether
it succeeded or not; drills record one row per drill in `drills`. `pgvault check` reads
both (backup_duration, drills), and `catalog list` / metrics report them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.rows import BackupRunRow, DrillRow
from pgvault.timeutil import iso


def record_backup_run(
    catalog: CatalogDB,
    *,
    kind: str,
    target: str,
    started_at: datetime,
    finished_at: datetime,
    result: str,
    error: str | None = None,
) -> int:
    """kind: logical|physical; target: database name or "cluster"; result: ok|failed."""
    with catalog.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO backup_runs(kind, target, started_at, finished_at, duration_s, result, "
            "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                target,
                iso(started_at),
                iso(finished_at),
                (finished_at - started_at).total_seconds(),
                result,
                error,
            ),
        )
        return int(cur.lastrowid or 0)


def record_drill(
    catalog: CatalogDB,
    *,
    kind: str,
    target: str,
    backup: str,
    started_at: datetime,
    finished_at: datetime,
    result: str,
    details: dict[str, Any],
) -> int:
    """kind: logical|pitr; result: ok|failed; details: what was compared, mismatches."""
    with catalog.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO drills(kind, target, backup, started_at, finished_at, duration_s, result, "
            "details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                target,
                backup,
                iso(started_at),
                iso(finished_at),
                (finished_at - started_at).total_seconds(),
                result,
                json.dumps(details, sort_keys=True, default=str),
            ),
        )
        return int(cur.lastrowid or 0)


def last_backup_runs(catalog: CatalogDB, kind: str | None = None) -> list[BackupRunRow]:
    """The latest run per (kind, target)."""
    rows = catalog.query(
        "SELECT r.* FROM backup_runs r JOIN (SELECT kind, target, MAX(started_at) AS s "
        "FROM backup_runs WHERE ? IS NULL OR kind = ? GROUP BY kind, target) m "
        "ON r.kind = m.kind AND r.target = m.target AND r.started_at = m.s "
        "ORDER BY r.kind, r.target",
        (kind, kind),
    )
    return [BackupRunRow.from_sql(r) for r in rows]


def last_drills(catalog: CatalogDB) -> list[DrillRow]:
    """The latest drill per (kind, target), details decoded."""
    rows = catalog.query(
        "SELECT d.* FROM drills d JOIN (SELECT kind, target, MAX(started_at) AS s FROM drills "
        "GROUP BY kind, target) m ON d.kind = m.kind AND d.target = m.target "
        "AND d.started_at = m.s ORDER BY d.kind, d.target"
    )
    return [DrillRow.from_sql(r) for r in rows]


def drills_since(catalog: CatalogDB, since: str) -> list[DrillRow]:
    """Every drill that finished at or after `since` (ISO), oldest first."""
    rows = catalog.query(
        "SELECT * FROM drills WHERE finished_at >= ? ORDER BY finished_at", (since,)
    )
    return [DrillRow.from_sql(r) for r in rows]
