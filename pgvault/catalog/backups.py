"""Catalog queries about logical backups: which dumps exist, and which one to restore.

A dump's point in time is its `finished_at` (when pg_dump finished): "restore to T"
picks the newest verified dump that had finished by T. Only `verified` dumps count
(invariant 6: restorable only if the catalog can prove it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvault import dbname
from pgvault.catalog.db import CatalogDB, iso
from pgvault.catalog.queries import LIST_COLUMNS, present
from pgvault.errors import NotRestorable

_COLS = ", ".join(LIST_COLUMNS)


def logical_backups(
    catalog: CatalogDB, db: str | None = None, *, verified_only: bool = True
) -> list[dict[str, Any]]:
    """Catalogued dumps (of one database), oldest first, as documented rows."""
    where = ["kind = 'logical'", "deleted_at IS NULL"]
    params: list[Any] = []
    if db is not None:
        where.append("db = ?")
        params.append(db)
    if verified_only:
        where.append("state = 'verified'")
    rows = catalog.query(
        f"SELECT {_COLS} FROM artifacts WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY finished_at, name",
        tuple(params),
    )
    return [present(r) for r in rows]


def pick_logical(
    catalog: CatalogDB, db: str, *, at: datetime | None = None, backup_id: str | None = None
) -> dict[str, Any]:
    """The dump to restore: the one named by backup_id, else the newest verified dump
    that finished at or before `at` (default: the newest). NotRestorable otherwise."""
    if backup_id is not None:
        name = f"{dbname.encode(db)}/{backup_id}"
        rows = catalog.query(
            f"SELECT {_COLS} FROM artifacts WHERE kind = 'logical' AND name = ?",  # noqa: S608
            (name,),
        )
        if not rows:
            raise NotRestorable(f"no logical backup {name} in the catalog")
        row = present(rows[0])
        if row["deleted_at"]:
            raise NotRestorable(f"logical backup {name} was deleted by retention")
        if row["state"] != "verified":
            why = f" ({row['error']})" if row.get("error") else ""
            raise NotRestorable(
                f"logical backup {name} is {row['state']}, not verified{why}; "
                "refusing to restore it"
            )
        return row
    rows = logical_backups(catalog, db)
    if not rows:
        raise NotRestorable(
            f"no verified logical backup of {db} in the catalog (take one with "
            f"`pgvault backup logical --db {db}` and let the pipeline verify it)"
        )
    if at is None:
        return rows[-1]
    limit = iso(at)
    eligible = [r for r in rows if r["finished_at"] and r["finished_at"] <= limit]
    if not eligible:
        raise NotRestorable(
            f"no verified dump of {db} finished at or before {limit}; the oldest one, "
            f"{rows[0]['name']}, finished at {rows[0]['finished_at']}"
        )
    return eligible[-1]
