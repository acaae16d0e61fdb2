"""Catalog queries about logical backups: which dumps exist, and which one to restore.

A dump's point in time is its `finished_at` (when pg_dump finished): "restore to T"
picks the newest verified dump that had finished by T. Only `verified` dumps count
(invariant 6: restorable only if the catalog can prove it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvault import dbname
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import SELECT_ALL
from pgvault.catalog.rows import DumpRow, dump_row
from pgvault.errors import NotRestorable
from pgvault.timeutil import iso

_COLS = SELECT_ALL


def logical_backups(
    catalog: CatalogDB, db: str | None = None, *, verified_only: bool = True
) -> list[DumpRow]:
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
    return [dump_row(r) for r in rows]


def pick_logical(
    catalog: CatalogDB, db: str, *, at: datetime | None = None, backup_id: str | None = None
) -> DumpRow:
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
        row = dump_row(rows[0])
        if row.deleted_at:
            raise NotRestorable(f"logical backup {name} was deleted by retention")
        if row.state != "verified":
            why = f" ({row.error})" if row.error else ""
            raise NotRestorable(
                f"logical backup {name} is {row.state}, not verified{why}; refusing to restore it"
            )
        return row
    dumps = logical_backups(catalog, db)
    if not dumps:
        raise NotRestorable(
            f"no verified logical backup of {db} in the catalog (take one with "
            f"`pgvault backup logical --db {db}` and let the pipeline verify it)"
        )
    if at is None:
        return dumps[-1]
    limit = iso(at)
    eligible = [r for r in dumps if r.finished_at and r.finished_at <= limit]
    if not eligible:
        raise NotRestorable(
            f"no verified dump of {db} finished at or before {limit}; the oldest one, "
            f"{dumps[0].name}, finished at {dumps[0].finished_at}"
        )
    return eligible[-1]
