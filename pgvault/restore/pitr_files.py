"""The files of a point-in-time restore: the target directory, the fetched and extracted
base backup (tablespaces into their mapped directories), and the tablespace guard.

Each step leaves nothing behind when it fails: the target was empty or absent before, and
every mapped tablespace directory was empty or absent (tablespaces.plan_mapping).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

from pgvault.catalog.rows import BackupRow
from pgvault.catalog.tablespaces import ReplayTablespaces
from pgvault.config import Settings
from pgvault.errors import RestoreError
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, run_tool
from pgvault.progress import byte_progress
from pgvault.restore.fetch import fetch_file
from pgvault.restore.proven_extract import Proof, extract_proven
from pgvault.restore.tablespaces import (
    DEFAULT_SUBDIR,
    Mapped,
    install_guard,
    rewrite_tablespace_map,
)
from pgvault.restore.tblspc_guard import GuardError, link_tablespace
from pgvault.restore.tblspc_guard import apply as guard_segment
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


class Extractor(Protocol):
    """How a partial restore (restore/partial.py) extracts the data tars: `prefix` is
    where the tar lands relative to the data directory ("" or "pg_tblspc/<oid>")."""

    def extract(self, archive: Path, dest: Path, prefix: str, proof: Proof) -> int: ...

    def verify_ignores(self) -> list[str]: ...


def prepare_target(target_dir: Path, needed: int) -> None:
    if target_dir.exists() and any(target_dir.iterdir()):
        raise RestoreError(f"target directory {target_dir} is not empty; refusing to overwrite it")
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    free = shutil.disk_usage(target_dir).free
    if free < needed:
        raise RestoreError(
            f"{target_dir}: {free // 2**20} MiB free, the restore needs about {needed // 2**20} MiB"
        )


def remove_outside(target_dir: Path, mapped: list[Mapped]) -> None:
    """A failed restore empties the tablespace directories it filled outside the target
    (plan_mapping made sure they were empty or absent before)."""
    for m in mapped:
        if not m.directory.is_relative_to(target_dir) and m.directory.is_dir():
            empty(m.directory, remove=False)


def empty(target_dir: Path, *, remove: bool) -> None:
    """Undo a failed restore: remove the directory we created, or empty the one given."""
    if remove:
        shutil.rmtree(target_dir, ignore_errors=True)
        return
    for child in target_dir.iterdir() if target_dir.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def materialize(
    settings: Settings,
    store: ObjectStore,
    backup: BackupRow,
    staging: Path,
    target_dir: Path,
    *,
    identities: list[Any],
    from_store: bool,
    mapped: list[Mapped],
    extractor: Extractor | None = None,
) -> dict[str, str]:
    """Fetch the base backup (sha256-checked), extract it (each tablespace into its
    mapped directory, linked from pg_tblspc) proving every member against backup_manifest
    as it is written (proven_extract), then pg_verifybackup the tree: without re-hashing
    it when extraction proved every file (proven_extract.Proof.complete). A partial
    restore's `extractor` (restore table|database) extracts instead, through the same
    proven extraction, leaving zero-filled placeholders that pg_verifybackup ignores."""
    backup_id = str(backup.backup_id)
    files = {f.name: f for f in backup.file_infos()}
    total = sum(f.size for n, f in files.items() if n != "manifest.json")
    in_backup = [m for m in mapped if m.source.in_backup]
    fetched = {}
    names = ["base.tar.zst", "pg_wal.tar.zst", "backup_manifest"]
    names += [f"{m.source.oid}.tar.zst" for m in in_backup]
    with byte_progress(f"fetching base backup {backup_id}", total) as advance:
        for name in names:
            fetched[name] = fetch_file(
                settings,
                store,
                files[name],
                staging / name,
                kind="physical",
                name=backup_id,
                identities=identities,
                advance=advance,
                prefer_spool=not from_store,
            )
    for_artifact(log, f"physical/{backup_id}").info("extracting into %s", target_dir)
    proof = Proof.of(staging / "backup_manifest")

    def extract(archive: Path, dest: Path, prefix: str) -> None:
        if extractor is None:
            extract_proven(archive, dest, proof, f"{prefix}/" if prefix else "")
        else:
            extractor.extract(archive, dest, prefix, proof)

    extract(staging / "base.tar.zst", target_dir, "")
    # one-pass (-Xfetch) backups list their WAL in backup_manifest under pg_wal/: proven too
    extract_proven(staging / "pg_wal.tar.zst", target_dir / "pg_wal", proof, "pg_wal/")
    for m in in_backup:
        m.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        extract(staging / f"{m.source.oid}.tar.zst", m.directory, f"pg_tblspc/{m.source.oid}")
        link_tablespace(str(target_dir), m.source.oid, str(m.directory))
    shutil.copy2(staging / "backup_manifest", target_dir / "backup_manifest")
    # the tree against PostgreSQL's own manifest (the contents too, unless extraction
    # proved every file), and the WAL it needs
    run_tool(
        [
            find_tool("pg_verifybackup", settings.postgres.bin_dir),
            *proof.verifybackup_flags(),
            # the mapped tablespaces under the target are verified through pg_tblspc links
            f"--ignore={DEFAULT_SUBDIR}",
            # a partial restore's zero-filled databases are not the backup's bytes
            *(f"--ignore={p}" for p in (extractor.verify_ignores() if extractor else [])),
            str(target_dir),
        ],
        what="pg_verifybackup",
        timeout=3600,
    )
    # PostgreSQL re-creates pg_tblspc links from tablespace_map at start: mapped ones only
    rewrite_tablespace_map(target_dir, in_backup)
    return fetched


def guard_tablespaces(
    settings: Settings,
    target_dir: Path,
    replay: ReplayTablespaces,
    mapped: list[Mapped],
    user_map: dict[str, Path],
) -> None:
    """Install the wal-restore guard, and apply it to the WAL the backup itself carries
    (pg_wal.tar): recovery may read those segments without calling restore_command."""
    install_guard(target_dir, replay, mapped, user_map, settings.postgres.bin_dir)
    wal_dir = target_dir / "pg_wal"

    def neighbour(name: str) -> str | None:
        return str(wal_dir / name) if (wal_dir / name).is_file() else None

    for seg in sorted(wal_dir.iterdir()):
        if seg.is_file() and len(seg.name) == 24:
            try:
                for line in guard_segment(str(target_dir), seg.name, str(seg), neighbour):
                    for_artifact(log, seg.name).info("%s", line)
            except GuardError as exc:
                raise RestoreError(
                    f"{seg.name}: cannot map a tablespace into the restored cluster: {exc}"
                ) from exc
