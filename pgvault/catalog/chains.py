"""Incremental chains (PostgreSQL 17+): which backups a restore of one backup combines.

A full backup restores alone. An incremental one (manifest.json `backup_type =
"incremental"`, `parent_id`, `chain` = ids full first, itself last) restores only with
every backup of its chain: each one verified, not expiring, not deleted, of the same
system, each the parent the next one names. `chain_rows` resolves a backup's chain
against the usable base backups, or says which link is missing; restorable windows,
plans, the producer's choice of parent and retention all go through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgvault.catalog.rows import BackupRow


@dataclass(frozen=True)
class Chain:
    """A backup's chain resolved: `rows` full first (the backup itself last), or the
    reason it cannot be restored (`missing`)."""

    rows: list[BackupRow]
    missing: str | None = None

    @property
    def ok(self) -> bool:
        return self.missing is None

    @property
    def size(self) -> int:
        """Stored bytes of every backup of the chain."""
        return sum(int(r.stored_size or r.size or 0) for r in self.rows)


def by_id(backups: Sequence[BackupRow]) -> dict[str, BackupRow]:
    return {b.label: b for b in backups}


def chain_rows(backup: BackupRow, usable: Mapping[str, BackupRow]) -> Chain:
    """The chain of `backup` among `usable` (verified, live base backups by id)."""
    ids = backup.chain_ids
    if backup.backup_type != "incremental":
        return Chain([backup])
    if len(ids) < 2 or ids[-1] != backup.label or ids[-2] != backup.parent_id:
        return Chain([backup], f"a consistent chain (manifest chain {ids})")
    rows: list[BackupRow] = []
    sysid = backup.meta.get("system_identifier")
    for position, bid in enumerate(ids[:-1]):
        row = usable.get(bid)
        if row is None:
            return Chain([backup], f"backup {bid} of its chain (not verified or gone)")
        expected_parent = ids[position - 1] if position else None
        if row.parent_id != expected_parent or (position == 0) != (row.backup_type == "full"):
            return Chain([backup], f"backup {bid} to be the chain's link it names")
        if row.meta.get("system_identifier") != sysid:
            return Chain([backup], f"backup {bid} to be of the same system")
        rows.append(row)
    return Chain([*rows, backup])


def dependents(name: str, backups: Sequence[BackupRow]) -> list[BackupRow]:
    """Backups whose chain includes `name` (itself excluded)."""
    return [b for b in backups if b.label != name and name in b.chain_ids]
