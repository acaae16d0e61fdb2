"""Typed catalog rows: what the query functions return, so callers see the columns.

One constructor, `artifact_row(mapping)`, turns an `artifacts` row (sqlite column -> value,
`files` and `meta` still JSON text or already decoded) into the frozen row type of its
kind: `WalRow` (wal, history), `BackupRow` (physical), `DumpRow` (logical). Columns a query
did not select are None. `to_json()` is the documented --json shape (JSON decoded, LSNs as
text) that `catalog list` has always printed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pgvault.catalog.db import ARTIFACT_COLUMNS
from pgvault.schemas import FileInfo
from pgvault.walfile import DEFAULT_SEG_SIZE, format_lsn

_LSN_COLUMNS = ("start_lsn", "end_lsn")


def _decoded(value: Any, empty: Any) -> Any:
    if value is None or value == "":
        return empty
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    """One row of `artifacts`, every column (None when the query did not select it)."""

    kind: str
    name: str
    state: str
    id: int | None = None
    state_at: str | None = None
    wal_type: str | None = None
    timeline: int | None = None
    segno: int | None = None
    seg_size: int | None = None
    start_lsn: int | None = None
    end_lsn: int | None = None
    first_commit: str | None = None
    last_commit: str | None = None
    db: str | None = None
    backup_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    size: int | None = None
    stored_size: int | None = None
    sha256: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)  # decoded FileInfo dicts
    meta: dict[str, Any] = field(default_factory=dict)  # decoded
    created_at: str | None = None
    stored_at: str | None = None
    verified_at: str | None = None
    checked_at: str | None = None
    error: str | None = None
    expiring_at: str | None = None
    deleted_at: str | None = None

    @property
    def subject(self) -> str:
        """`kind/name`, as log lines and reports name an artifact."""
        return f"{self.kind}/{self.name}"

    @property
    def backup_time(self) -> str | None:
        """When a backup finished (when it was verified, if the producer recorded none)."""
        return self.finished_at or self.verified_at

    def file_infos(self) -> list[FileInfo]:
        return [FileInfo.model_validate(f) for f in self.files]

    def store_keys(self) -> list[str]:
        """Store keys of the files that were uploaded."""
        return [str(f["key"]) for f in self.files if f.get("key")]

    def to_json(self) -> dict[str, Any]:
        """The documented --json shape: every listed column, JSON decoded, LSNs as text."""
        out: dict[str, Any] = {}
        for col in ARTIFACT_COLUMNS:
            value = getattr(self, col)
            if col in _LSN_COLUMNS and value is not None:
                value = format_lsn(int(value))
            out[col] = value
        return out


@dataclass(frozen=True, slots=True)
class WalRow(ArtifactRow):
    """A WAL file (segment, .partial, .backup) or a timeline history file."""


@dataclass(frozen=True, slots=True)
class BackupRow(ArtifactRow):
    """A physical base backup."""

    @property
    def label(self) -> str:
        return str(self.backup_id or self.name)

    @property
    def wal_seg_size(self) -> int:
        return int(self.meta.get("seg_size") or DEFAULT_SEG_SIZE)

    @property
    def backup_type(self) -> str:
        """ "full" or "incremental" (PostgreSQL 17+; rows from before it are full)."""
        return str(self.meta.get("backup_type") or "full")

    @property
    def parent_id(self) -> str | None:
        """The backup an incremental was taken against (manifest.json `parent_id`)."""
        parent = self.meta.get("parent_id")
        return str(parent) if parent else None

    @property
    def chain_ids(self) -> list[str]:
        """The backups a restore of this one combines, full first, this one last."""
        chain = self.meta.get("chain") or []
        return [str(c) for c in chain] if chain else [self.label]


@dataclass(frozen=True, slots=True)
class DumpRow(ArtifactRow):
    """A logical dump of one database."""


_BY_KIND: dict[str, type[ArtifactRow]] = {
    "wal": WalRow,
    "history": WalRow,
    "physical": BackupRow,
    "logical": DumpRow,
}
_FIELDS = frozenset(f.name for f in fields(ArtifactRow))


def artifact_row(row: Mapping[str, Any]) -> ArtifactRow:
    """The typed row of an `artifacts` row, by its kind."""
    values = {k: v for k, v in row.items() if k in _FIELDS}
    values["files"] = list(_decoded(row.get("files"), []))
    values["meta"] = dict(_decoded(row.get("meta"), {}))
    return _BY_KIND.get(str(row["kind"]), ArtifactRow)(**values)


def backup_row(row: Mapping[str, Any]) -> BackupRow:
    typed = artifact_row(row)
    assert isinstance(typed, BackupRow), typed.subject
    return typed


def dump_row(row: Mapping[str, Any]) -> DumpRow:
    typed = artifact_row(row)
    assert isinstance(typed, DumpRow), typed.subject
    return typed


# -- side tables --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupRunRow:
    """One attempt of a backup (`backup_runs`)."""

    id: int
    kind: str
    target: str
    started_at: str
    finished_at: str
    duration_s: float
    result: str
    error: str | None = None

    @classmethod
    def from_sql(cls, row: Mapping[str, Any]) -> BackupRunRow:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DrillRow:
    """One restore drill (`drills`), details decoded."""

    id: int
    kind: str
    target: str
    backup: str
    started_at: str
    finished_at: str
    duration_s: float
    result: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sql(cls, row: Mapping[str, Any]) -> DrillRow:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        values["details"] = dict(_decoded(row.get("details"), {}))
        return cls(**values)
