"""Read-side catalog queries for the CLI, the producer and the checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgvault.catalog.db import ARTIFACT_COLUMNS, CatalogDB
from pgvault.catalog.rows import ArtifactRow, BackupRow, artifact_row, backup_row

LIST_COLUMNS = ARTIFACT_COLUMNS
SELECT_ALL = ", ".join(("id", *ARTIFACT_COLUMNS))  # every column of a typed row


def state_of(catalog: CatalogDB, kind: str, name: str) -> ArtifactRow | None:
    """The row of kind/name (deleted or not) with only its state, verified_at, deleted_at
    and sha256 (the other columns are None)."""
    rows = catalog.query(
        "SELECT kind, name, state, verified_at, deleted_at, sha256 FROM artifacts "
        "WHERE kind=? AND name=?",
        (kind, name),
    )
    return artifact_row(rows[0]) if rows else None


def artifact(catalog: CatalogDB, kind: str, name: str) -> ArtifactRow | None:
    sql = f"SELECT {SELECT_ALL} FROM artifacts WHERE kind=? AND name=?"  # noqa: S608
    rows = catalog.query(sql, (kind, name))
    return artifact_row(rows[0]) if rows else None


def list_artifacts(
    catalog: CatalogDB,
    kind: str | None = None,
    state: str | None = None,
    limit: int | None = None,
    include_deleted: bool = False,
) -> list[ArtifactRow]:
    where = []
    params: list[Any] = []
    if kind:
        where.append("kind=?")
        params.append(kind)
    if state:
        where.append("state=?")
        params.append(state)
    if not include_deleted:
        where.append("deleted_at IS NULL")
    sql = f"SELECT {SELECT_ALL} FROM artifacts"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY kind, COALESCE(timeline, 0), COALESCE(segno, 0), name"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [artifact_row(r) for r in catalog.query(sql, tuple(params))]


def counts_by_state(catalog: CatalogDB) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in catalog.query(
        "SELECT kind, state, COUNT(*) AS n FROM artifacts WHERE deleted_at IS NULL "
        "GROUP BY kind, state"
    ):
        out.setdefault(row["kind"], {})[row["state"]] = row["n"]
    return out


def newest_verified_segment(catalog: CatalogDB) -> ArtifactRow | None:
    """The end of the newest timeline's verified chain (via wal_runs, index only)."""
    rows = catalog.query(
        "SELECT timeline, MAX(end_segno) AS segno FROM wal_runs GROUP BY timeline "
        "ORDER BY timeline DESC LIMIT 1"
    )
    if not rows:
        return None
    found = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts "  # noqa: S608
        "WHERE timeline=? AND segno=? AND kind='wal' AND state='verified'",
        (rows[0]["timeline"], rows[0]["segno"]),
    )
    return artifact_row(found[0]) if found else None


def newest_backups(catalog: CatalogDB, kind: str, db: str | None, limit: int) -> list[ArtifactRow]:
    """The newest verified, not deleted backups of a kind (of one database), newest first;
    a backup's time is when it finished (when it was verified if none was recorded)."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind=? AND state='verified' "  # noqa: S608
        "AND deleted_at IS NULL AND (? IS NULL OR db=?) "
        "ORDER BY COALESCE(finished_at, verified_at) DESC LIMIT ?",
        (kind, db, db, limit),
    )
    return [artifact_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class LastBackup:
    """The newest verified, not deleted backup of a kind and database (`db` is "all" for
    physical backups); `at` is when it finished (when it was verified if none recorded)."""

    kind: str
    db: str
    size: int | None
    at: str | None


def last_backups(catalog: CatalogDB) -> list[LastBackup]:
    """The newest verified backup per kind and database (ties all listed)."""
    rows = catalog.query(
        "SELECT kind, COALESCE(db, 'all') AS db, size, COALESCE(finished_at, "
        "verified_at) AS at FROM artifacts a WHERE kind IN ('logical', 'physical') "
        "AND state='verified' AND deleted_at IS NULL AND COALESCE(finished_at, "
        "verified_at) = (SELECT MAX(COALESCE(finished_at, verified_at)) FROM artifacts "
        "b WHERE b.kind=a.kind AND COALESCE(b.db, '')=COALESCE(a.db, '') AND "
        "b.state='verified' AND b.deleted_at IS NULL)"
    )
    return [LastBackup(str(r["kind"]), str(r["db"]), r["size"], r["at"]) for r in rows]


def wal_segment_counts(catalog: CatalogDB) -> dict[str, int]:
    """Not deleted WAL segments (not .partial/.backup/history) by state."""
    rows = catalog.query(
        "SELECT state, COUNT(*) AS n FROM artifacts WHERE kind='wal' AND segno IS NOT "
        "NULL AND deleted_at IS NULL GROUP BY state"
    )
    return {str(r["state"]): int(r["n"]) for r in rows}


def verified_end_below(catalog: CatalogDB, timeline: int, segno: int) -> int | None:
    """The last segment of the verified chain of `timeline` that ends before `segno`."""
    value = catalog.scalar(
        "SELECT MAX(end_segno) FROM wal_runs WHERE timeline=? AND end_segno<?", (timeline, segno)
    )
    return None if value is None else int(value)


def first_wal_segno(catalog: CatalogDB, timeline: int, upto: int) -> int | None:
    """The first catalogued WAL segment of `timeline` at or before `upto` (any state)."""
    value = catalog.scalar(
        "SELECT MIN(segno) FROM artifacts WHERE timeline=? AND segno IS NOT NULL "
        "AND segno<=? AND kind='wal'",
        (timeline, upto),
    )
    return None if value is None else int(value)


def wal_created_at(catalog: CatalogDB, name: str) -> str | None:
    """When the WAL file `name` was first catalogued (it reached the spool), if known."""
    value = catalog.scalar("SELECT created_at FROM artifacts WHERE kind='wal' AND name=?", (name,))
    return str(value) if value else None


def oldest_verified_backup(catalog: CatalogDB) -> BackupRow | None:
    """The verified, not deleted base backup with the lowest start LSN (timeline known)."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind='physical' AND "  # noqa: S608
        "state='verified' AND deleted_at IS NULL AND start_lsn IS NOT NULL "
        "AND timeline IS NOT NULL ORDER BY start_lsn LIMIT 1"
    )
    return backup_row(rows[0]) if rows else None
