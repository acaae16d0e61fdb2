"""Which files of a base backup a table or database restore extracts (issue 20).

The base backup's `manifest.json` records pg_database at the backup's start (oid, name,
template). A partial restore extracts global/, every template database, the maintenance
database (`postgres`: the scratch server is watched through it) and the databases it
restores; every other database's relation files are written as sparse zero-filled files
of their size in the tar (the size backup_manifest gives), never extracted. WAL replay
still works on them: after the backup's checkpoint the first change of every page
carries a full-page image, and nothing ever reads those databases (autovacuum is off
in the scratch cluster, nobody connects to them). Their PG_VERSION and pg_filenode.map
are extracted (a few bytes) so the directories stay well-formed. Everything extracted is
proven against backup_manifest on the way (proven_extract, the full restore's
extraction); pg_verifybackup is told to ignore the zero-filled directories, and re-hashes
nothing when every other file was proven.

A directory base/<oid> whose oid is not in the list (a database created while the backup
ran) is extracted, as is everything when the manifest predates the list (the report
says so). A database created after the backup comes from WAL entirely.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pgvault.restore.proven_extract import Proof, extract_proven

ALWAYS_EXTRACTED = ("PG_VERSION", "pg_filenode.map")


@dataclass
class PartialLayout:
    """A pitr_files.Extractor that zero-fills the databases in `skipped` (oid -> name)."""

    skipped: dict[int, str]
    kept: list[str]
    known: bool  # the backup recorded its databases (else everything is extracted)
    bytes_extracted: int = 0
    bytes_sparse: int = 0
    extract_s: float = 0.0
    first_started: float | None = None  # monotonic time the first tar began extracting
    _ignores: set[str] = field(default_factory=set)

    def _db_of(self, name: str) -> tuple[int, str] | None:
        """(database oid, its directory relative to the tar) for a relation file."""
        parts = PurePosixPath(name).parts
        if len(parts) < 3 or not parts[1].isdigit():
            return None
        if parts[0] != "base" and not parts[0].startswith("PG_"):
            return None
        return int(parts[1]), f"{parts[0]}/{parts[1]}"

    def extract(self, archive: Path, dest: Path, prefix: str, proof: Proof) -> int:
        started = time.monotonic()
        if self.first_started is None:
            self.first_started = started

        def placeholder(name: str) -> bool:
            found = self._db_of(name)
            if found is None or found[0] not in self.skipped:
                return False
            if PurePosixPath(name).name in ALWAYS_EXTRACTED:
                return False
            self._ignores.add(f"{prefix}/{found[1]}" if prefix else found[1])
            return True

        written, skipped = proof.bytes_written, proof.bytes_skipped
        members = extract_proven(archive, dest, proof, f"{prefix}/" if prefix else "", placeholder)
        self.bytes_extracted += proof.bytes_written - written
        self.bytes_sparse += proof.bytes_skipped - skipped
        self.extract_s += time.monotonic() - started
        return members

    def verify_ignores(self) -> list[str]:
        return sorted(self._ignores)

    def as_dict(self) -> dict[str, Any]:
        return {
            "databases_known": self.known,
            "databases_extracted": self.kept,
            "databases_zero_filled": sorted(self.skipped.values()),
            "bytes_extracted": self.bytes_extracted,
            "bytes_zero_filled": self.bytes_sparse,
        }


def layout_for(meta: Mapping[str, Any], wanted: Iterable[str], maintenance: str) -> PartialLayout:
    """The layout extracting only templates, `maintenance` and the `wanted` databases."""
    dbs = meta.get("databases")
    keep = {*wanted, maintenance}
    if not isinstance(dbs, list):
        return PartialLayout(
            skipped={}, kept=["(all: the backup did not record them)"], known=False
        )
    skipped: dict[int, str] = {}
    kept: list[str] = []
    for d in dbs:
        oid, name = int(d["oid"]), str(d["name"])
        if d.get("template") or name in keep or name in ("template0", "template1"):
            kept.append(name)
        else:
            skipped[oid] = name
    return PartialLayout(skipped=skipped, kept=sorted(kept), known=True)
