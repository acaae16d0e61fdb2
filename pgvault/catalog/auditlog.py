"""The store audit's own tables (`audit_runs`, `audit_cycles`, migration 005): typed rows,
recording a run, and the read-back cycle the next run resumes.

A read-back cycle re-proves every retained verified artifact whose `checked_at` is older
than the cycle's start; `checked_at` itself (set through catalog/transitions.py) is the
cursor, so a run that stops half-way leaves exactly the rest for the next one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.timeutil import parse_iso


def _values(cls: type, row: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: row.get(f.name) for f in fields(cls)}


@dataclass(frozen=True, slots=True)
class AuditRunRow:
    """One run of `pgvault catalog audit` (`audit_runs`), details decoded."""

    id: int
    started_at: str
    finished_at: str | None
    listing: int
    listed: int
    missing: int
    corrupt: int
    objects_read: int
    bytes_read: int
    cycle_id: int | None
    cycle_complete: int
    reuploads: int
    result: str  # ok | found | failed
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sql(cls, row: Mapping[str, Any]) -> AuditRunRow:
        values = _values(cls, row)
        for k in ("listing", "listed", "missing", "corrupt", "objects_read", "bytes_read"):
            values[k] = int(values[k] or 0)
        values["cycle_complete"] = int(values["cycle_complete"] or 0)
        values["reuploads"] = int(values["reuploads"] or 0)
        values["details"] = dict(json.loads(row.get("details") or "{}"))
        return cls(**values)

    def found(self, state: str) -> list[str]:
        """`kind/name` of the artifacts this run found missing or corrupt."""
        return [str(x) for x in self.details.get(state, [])]


@dataclass(frozen=True, slots=True)
class AuditCycleRow:
    """One rolling read-back cycle (`audit_cycles`)."""

    id: int
    started_at: str
    completed_at: str | None
    objects_read: int
    bytes_read: int

    @classmethod
    def from_sql(cls, row: Mapping[str, Any]) -> AuditCycleRow:
        values = _values(cls, row)
        values["objects_read"] = int(values["objects_read"] or 0)
        values["bytes_read"] = int(values["bytes_read"] or 0)
        return cls(**values)


_RUN_COLUMNS = tuple(f.name for f in fields(AuditRunRow) if f.name != "id")


def record_run(catalog: CatalogDB, values: Mapping[str, Any]) -> int:
    """Insert one finished audit run (`values`: the audit_runs columns but id)."""
    row = {k: values.get(k) for k in _RUN_COLUMNS}
    row["details"] = json.dumps(row.get("details") or {}, sort_keys=True)
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    with catalog.transaction() as conn:
        cur = conn.execute(
            f"INSERT INTO audit_runs({names}) VALUES ({marks})",  # noqa: S608
            tuple(row.values()),
        )
        return int(cur.lastrowid or 0)


def runs(catalog: CatalogDB, limit: int = 20) -> list[AuditRunRow]:
    rows = catalog.query("SELECT * FROM audit_runs ORDER BY id DESC LIMIT ?", (limit,))
    return [AuditRunRow.from_sql(r) for r in rows]


def last_listing(catalog: CatalogDB) -> AuditRunRow | None:
    """The newest run whose listing pass went through the whole store."""
    rows = catalog.query("SELECT * FROM audit_runs WHERE listing = 1 ORDER BY id DESC LIMIT 1")
    return AuditRunRow.from_sql(rows[0]) if rows else None


def last_reading(catalog: CatalogDB) -> AuditRunRow | None:
    """The newest run that read objects back."""
    rows = catalog.query(
        "SELECT * FROM audit_runs WHERE objects_read > 0 OR corrupt > 0 ORDER BY id DESC LIMIT 1"
    )
    return AuditRunRow.from_sql(rows[0]) if rows else None


def last_complete_cycle(catalog: CatalogDB) -> AuditCycleRow | None:
    rows = catalog.query(
        "SELECT * FROM audit_cycles WHERE completed_at IS NOT NULL ORDER BY id DESC LIMIT 1"
    )
    return AuditCycleRow.from_sql(rows[0]) if rows else None


def open_cycle(catalog: CatalogDB) -> AuditCycleRow | None:
    rows = catalog.query(
        "SELECT * FROM audit_cycles WHERE completed_at IS NULL ORDER BY id DESC LIMIT 1"
    )
    return AuditCycleRow.from_sql(rows[0]) if rows else None


def cycle_for_run(
    catalog: CatalogDB, now: str, cycle_days: float, *, new: bool = False
) -> AuditCycleRow | None:
    """The cycle this run works on: the open one (resume), else a new one when the last
    one started `cycle_days` ago (or `new`), else None (nothing due)."""
    current = open_cycle(catalog)
    if current is not None and not new:
        return current
    last = catalog.query("SELECT started_at FROM audit_cycles ORDER BY id DESC LIMIT 1")
    if not new and last:
        due = parse_iso(last[0]["started_at"]) + timedelta(days=cycle_days)
        if parse_iso(now) < due:
            return None
    with catalog.transaction() as conn:
        if current is not None:  # `--new-cycle`: the open cycle starts over, from now
            conn.execute(
                "UPDATE audit_cycles SET started_at = ?, objects_read = 0, bytes_read = 0 "
                "WHERE id = ?",
                (now, current.id),
            )
        else:
            conn.execute("INSERT INTO audit_cycles(started_at) VALUES (?)", (now,))
    found = open_cycle(catalog)
    assert found is not None
    return found


def advance_cycle(
    catalog: CatalogDB, cycle_id: int, objects: int, size: int, completed_at: str | None
) -> None:
    with catalog.transaction() as conn:
        conn.execute(
            "UPDATE audit_cycles SET objects_read = objects_read + ?, "
            "bytes_read = bytes_read + ?, completed_at = ? WHERE id = ?",
            (objects, size, completed_at, cycle_id),
        )
