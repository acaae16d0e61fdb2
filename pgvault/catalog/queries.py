"""Read-side catalog queries for the CLI, the producer and the checks."""

from __future__ import annotations

from typing import Any

from pgvault.catalog.db import ARTIFACT_COLUMNS, CatalogDB
from pgvault.catalog.rows import ArtifactRow, artifact_row

LIST_COLUMNS = ARTIFACT_COLUMNS
SELECT_ALL = ", ".join(("id", *ARTIFACT_COLUMNS))  # every column of a typed row


def state_of(catalog: CatalogDB, kind: str, name: str) -> dict[str, Any] | None:
    rows = catalog.query(
        "SELECT state, verified_at, deleted_at, sha256 FROM artifacts WHERE kind=? AND name=?",
        (kind, name),
    )
    return rows[0] if rows else None


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
