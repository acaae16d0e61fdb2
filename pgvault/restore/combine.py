"""Restoring an incremental chain (PostgreSQL 17+): fetch, prove, combine.

Every backup of the plan's chain (full first, the incremental restored last) is fetched
through the verified path (sha256 of every file, spool copy or store), extracted (each
member proven against its backup_manifest on the way, proven_extract) into a
plain directory of its own under the restore's staging directory (pg_combinebackup reads
directories, not tars), tablespaces into their own directories linked from pg_tblspc,
and checked against its own backup_manifest with pg_verifybackup. pg_combinebackup of
the backup's major version then writes the combined data directory into the target, each
tablespace into its mapped directory (-T), with a new backup_manifest; the last backup's
pg_wal.tar.zst supplies the WAL to its consistent point, and pg_verifybackup checks the
combined tree (and that WAL) before recovery starts.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgvault.catalog.rows import BackupRow
from pgvault.config import Settings
from pgvault.errors import RestoreError
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, run_tool
from pgvault.progress import byte_progress
from pgvault.restore.fetch import fetch_file
from pgvault.restore.proven_extract import Proof, extract_proven
from pgvault.restore.safetar import extract_zst_tar
from pgvault.restore.tablespaces import DEFAULT_SUBDIR, Mapped, rewrite_tablespace_map
from pgvault.restore.tblspc_guard import link_tablespace
from pgvault.restore.version import backup_major
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


def _fetch(
    settings: Settings,
    store: ObjectStore,
    backup: BackupRow,
    names: list[str],
    into: Path,
    *,
    identities: list[Any],
    from_store: bool,
    advance: Callable[[int], None],
) -> dict[str, str]:
    files = {f.name: f for f in backup.file_infos()}
    out = {}
    for name in names:
        if name not in files:
            raise RestoreError(f"physical/{backup.label}: the catalog lists no {name}")
        out[f"{backup.label}/{name}"] = fetch_file(
            settings,
            store,
            files[name],
            into / name,
            kind="physical",
            name=backup.label,
            identities=identities,
            advance=advance,
            prefer_spool=not from_store,
        )
    return out


def _unpack(
    settings: Settings, backup: BackupRow, files: Path, data: Path, oids: list[int]
) -> dict[int, Path]:
    """One backup as a plain directory, its tablespaces linked, every member proven
    against its backup_manifest while extracted (proven_extract, as a full restore does);
    then pg_verifybackup'd for what extraction does not prove (nothing missing or extra)."""
    spaces = {}
    try:  # the error names the backup of the chain, not only the member
        proof = Proof.of(files / "backup_manifest")
        extract_proven(files / "base.tar.zst", data, proof)
        for oid in oids:
            tar = files / f"{oid}.tar.zst"
            if not tar.exists():
                continue  # created after this backup: a later one of the chain holds it
            directory = data.parent / "tblspc" / str(oid)
            extract_proven(tar, directory, proof, f"pg_tblspc/{oid}/")
            link_tablespace(str(data), oid, str(directory))
            spaces[oid] = directory
    except RestoreError as exc:
        raise RestoreError(f"backup {backup.label} of the chain: {exc}") from None
    shutil.copy2(files / "backup_manifest", data / "backup_manifest")
    run_tool(
        [
            find_tool("pg_verifybackup", settings.postgres.bin_dir, backup_major(backup.meta)),
            # every file there and of its size; the bytes were proven member by member
            # while extracted, the combined tree's checksums and WAL after pg_combinebackup
            "--skip-checksums",
            "--no-parse-wal",
            "--quiet",
            str(data),
        ],
        what=f"pg_verifybackup of {backup.label}",
        timeout=3600,
    )
    return spaces


def materialize_chain(
    settings: Settings,
    store: ObjectStore,
    chain: list[BackupRow],
    staging: Path,
    target_dir: Path,
    *,
    identities: list[Any],
    from_store: bool,
    mapped: list[Mapped],
) -> dict[str, str]:
    """The chain fetched, proven, combined into `target_dir`; the keys of the returned
    dict are `<backup_id>/<file>`, the values "spool" or "store"."""
    last = chain[-1]
    alog = for_artifact(log, f"physical/{last.label}")
    in_backup = [m for m in mapped if m.source.in_backup]
    oids = [m.source.oid for m in in_backup]
    total = sum(
        int(f.get("size") or 0) for b in chain for f in b.files if f.get("name") != "manifest.json"
    )
    fetched: dict[str, str] = {}
    inputs: list[Path] = []
    spaces: dict[int, Path] = {}
    with byte_progress(f"fetching backup chain of {last.label}", total) as advance:
        for backup in chain:
            work = staging / backup.label
            names = ["base.tar.zst", "backup_manifest"]
            names += [f"{o}.tar.zst" for o in oids if _has(backup, o)]
            if backup is last:
                names.append("pg_wal.tar.zst")
            fetched |= _fetch(
                settings,
                store,
                backup,
                names,
                work / "files",
                identities=identities,
                from_store=from_store,
                advance=advance,
            )
            alog.info("extracting %s (%s) into %s", backup.label, backup.backup_type, work)
            spaces = _unpack(settings, backup, work / "files", work / "data", oids)
            inputs.append(work / "data")
            if backup is not last:
                shutil.rmtree(work / "files")  # the archives, once extracted
    _combine(settings, last, inputs, target_dir, spaces=spaces, in_backup=in_backup)
    extract_zst_tar(staging / last.label / "files" / "pg_wal.tar.zst", target_dir / "pg_wal")
    final_map = inputs[-1] / "tablespace_map"
    if final_map.exists() and not (target_dir / "tablespace_map").exists():
        shutil.copy2(final_map, target_dir / "tablespace_map")
    run_tool(
        [
            find_tool("pg_verifybackup", settings.postgres.bin_dir, backup_major(last.meta)),
            f"--ignore={DEFAULT_SUBDIR}",
            str(target_dir),
        ],
        what="pg_verifybackup of the combined backup",
        timeout=3600,
    )
    rewrite_tablespace_map(target_dir, in_backup)
    return fetched


def _has(backup: BackupRow, oid: int) -> bool:
    return any(f.name == f"{oid}.tar.zst" for f in backup.file_infos())


def _combine(
    settings: Settings,
    last: BackupRow,
    inputs: list[Path],
    target_dir: Path,
    *,
    spaces: dict[int, Path],
    in_backup: list[Mapped],
) -> None:
    """pg_combinebackup of the backup's major version: inputs full first, into target_dir,
    each tablespace of the last backup into its mapped directory."""
    major = backup_major(last.meta)
    if major is not None and major < 17:
        raise RestoreError(f"backup {last.label}: incremental backups need PostgreSQL 17+")
    relocate = []
    for m in in_backup:
        if m.source.oid in spaces:  # pg_combinebackup creates it (empty or absent)
            relocate += ["-T", f"{spaces[m.source.oid]}={m.directory}"]
    for_artifact(log, f"physical/{last.label}").info(
        "pg_combinebackup of %d backups into %s", len(inputs), target_dir
    )
    run_tool(
        [
            find_tool("pg_combinebackup", settings.postgres.bin_dir, major),
            "-o",
            str(target_dir),
            # like the extraction of a full backup: PostgreSQL syncs the data directory
            # when it starts from a backup; a crashed restore is restarted, not resumed
            "--no-sync",
            *relocate,
            *(str(p) for p in inputs),
        ],
        what="pg_combinebackup",
        timeout=6 * 3600,
    )
