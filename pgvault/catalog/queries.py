"""Read-side catalog queries for the CLI, the producer and the checks."""

from __future__ import annotations

import json
from typing import Any

from pgvault.catalog.db import ARTIFACT_COLUMNS, CatalogDB
from pgvault.walfile import format_lsn

LIST_COLUMNS = ARTIFACT_COLUMNS


def state_of(catalog: CatalogDB, kind: str, name: str) -> dict[str, Any] | None:
    rows = catalog.query(
        "SELECT state, verified_at, deleted_at, sha256 FROM artifacts WHERE kind=? AND name=?",
        (kind, name),
    )
    return rows[0] if rows else None


def artifact(catalog: CatalogDB, kind: str, name: str) -> dict[str, Any] | None:
    cols = ", ".join(LIST_COLUMNS)
    rows = catalog.query(f"SELECT {cols} FROM artifacts WHERE kind=? AND name=?", (kind, name))  # noqa: S608
    return present(rows[0]) if rows else None


def present(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row as documented in --json output: JSON decoded, LSNs as text."""
    out = dict(row)
    out["files"] = json.loads(row.get("files") or "[]")
    out["meta"] = json.loads(row.get("meta") or "{}")
    for col in ("start_lsn", "end_lsn"):
        if out.get(col) is not None:
            out[col] = format_lsn(int(out[col]))
    return out


def list_artifacts(
    catalog: CatalogDB,
    kind: str | None = None,
    state: str | None = None,
    limit: int | None = None,
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
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
    sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM artifacts"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY kind, COALESCE(timeline, 0), COALESCE(segno, 0), name"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [present(r) for r in catalog.query(sql, tuple(params))]


def counts_by_state(catalog: CatalogDB) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in catalog.query(
        "SELECT kind, state, COUNT(*) AS n FROM artifacts WHERE deleted_at IS NULL "
        "GROUP BY kind, state"
    ):
        out.setdefault(row["kind"], {})[row["state"]] = row["n"]
    return out
