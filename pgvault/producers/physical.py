"""`pgvault backup physical`: pg_basebackup into the spool, verified, with manifest.json.

    pg_basebackup -D - -Ft -Xfetch --checkpoint=fast --manifest-checksums=SHA256
      | one pass (bbstream): hash every member, compress with `jobs` zstd threads,
        hash the stored bytes    -> spool/physical/.<id>.tmp/ base.tar.zst, pg_wal.tar.zst
    backup_manifest (the stream's last member): its checksum, then every data file's
    size and SHA-256 against it, the WAL start..end present
    (PostgreSQL 18+: pg_verifybackup --format=tar as well)
    manifest.json (written last) -> rename to spool/physical/<id>/

A cluster with tablespaces takes the older two-pass way (physical_classic.produce_classic:
`-D <dir> -Xstream`, then decompress and check), since pg_basebackup cannot write them to
stdout. basebackup_run explains the choice of -Xfetch (with a temporary slot). `jobs`
(`[physical] max_workers`, `backup physical --jobs`) is the zstd worker threads, like
pgBackRest's process-max. pg_basebackup is the server's own major version.

The watcher announces the directory once it appears under its final name; upload, verify
and catalog handle it like any other artifact.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgvault import pg, spool
from pgvault.alerting import raise_alert
from pgvault.broker.base import Broker
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import state_of
from pgvault.catalog.runs import record_backup_run
from pgvault.config import Settings
from pgvault.errors import BackupError, PgvaultError, SpoolError
from pgvault.ids import unique_backup_id
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, major_of, run_tool
from pgvault.producers.basebackup_verify import wal_range
from pgvault.producers.physical_classic import produce_classic, produce_onepass
from pgvault.schemas.manifest import (
    MANIFEST_NAME,
    BaseBackupCheck,
    DatabaseEntry,
    PhysicalManifest,
    TablespaceInfo,
)
from pgvault.timeutil import iso
from pgvault.walfile import format_lsn, segment_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BasebackupExtras:
    """What an incremental backup adds (pgvault.producers.incremental): pg_basebackup
    arguments (`--incremental=FILE`) and manifest.json fields, given the new backup id."""

    args: tuple[str, ...] = ()
    fields: Callable[[str], dict[str, Any]] = lambda _backup_id: {}


@dataclass
class PhysicalResult:
    backup_id: str
    path: Path
    manifest: PhysicalManifest


def _server_facts(settings: Settings) -> dict[str, Any]:
    with pg.connect(settings.postgres) as conn:
        row = pg.fetch_one(
            conn,
            "SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid,"
            " current_setting('server_version') AS version,"
            " current_setting('server_version_num')::int AS version_num,"
            " current_setting('wal_segment_size') AS seg_size,"
            " current_setting('data_directory') AS data_directory,"
            # what pg_basebackup will copy, for the progress bar's total and ETA
            " (SELECT sum(pg_database_size(oid))::bigint FROM pg_database"
            "  WHERE has_database_privilege(oid, 'CONNECT')) AS db_bytes",
        )
        # pg_basebackup -Ft writes each of these as <oid>.tar beside base.tar
        spaces = pg.fetch_all(
            conn,
            "SELECT oid::int AS oid, spcname AS name, pg_tablespace_location(oid) AS location "
            "FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
        )
        # which base/<oid> is which database: `restore table|database` extracts only these
        dbs = pg.fetch_all(
            conn,
            "SELECT oid::int AS oid, datname AS name, datistemplate AS template "
            "FROM pg_database ORDER BY oid",
        )
    assert row is not None
    seg = str(row["seg_size"])
    seg_size = int(seg[:-2]) * 1024 * 1024 if seg.endswith("MB") else int(seg)
    return {
        "system_identifier": row["sysid"],
        "pg_version": row["version"],
        "pg_version_num": row["version_num"],
        "pg_major": major_of(row["version_num"]),
        "seg_size": seg_size,
        "db_bytes": int(row["db_bytes"]) if row["db_bytes"] else None,
        "tablespaces": [
            {"oid": int(t["oid"]), "name": str(t["name"]), "location": str(t["location"])}
            for t in spaces
        ],
        "databases": [
            {"oid": int(d["oid"]), "name": str(d["name"]), "template": bool(d["template"])}
            for d in dbs
        ],
    }


def _verifybackup(settings: Settings, tmp: Path, major: int | None) -> bool:
    """PostgreSQL 18+ verifies tar-format backups itself: run it beside pgvault's own
    member check (WAL parsing is not supported for tars: pg_wal.tar.zst is checked by
    verify_wal_tar). False when the major cannot do it."""
    if major is None or major < 18:
        return False
    tool = find_tool("pg_verifybackup", settings.postgres.bin_dir, major)
    run_tool(
        [tool, "--format=tar", "--no-parse-wal", "--exit-on-error", "--quiet", str(tmp)],
        env={"LC_ALL": "C"},
        what="pg_verifybackup",
    )
    return True


def _record(
    catalog: CatalogDB | None, started: datetime, result: str, error: str | None = None
) -> None:
    if catalog is not None:
        record_backup_run(
            catalog,
            kind="physical",
            target="cluster",
            started_at=started,
            finished_at=datetime.now(UTC),
            result=result,
            error=error,
        )


def take_physical_backup(
    settings: Settings,
    catalog: CatalogDB | None,
    broker: Broker | None,
    extras: BasebackupExtras | None = None,
    *,
    jobs: int | None = None,
) -> PhysicalResult:
    """One base backup into the spool. Leaves nothing behind on failure; one at a time
    (a lock in spool/physical/), which also makes a killed run's leftovers safe to remove.
    `jobs`: zstd threads, default `[physical] max_workers`."""
    root = settings.spool_dir / "physical"
    threads = jobs or settings.physical.max_workers
    try:
        with spool.exclusive(root / ".lock", root, "physical backup"):
            return _take(settings, catalog, broker, threads, extras or BasebackupExtras())
    except SpoolError as exc:
        raise BackupError(str(exc)) from None


def _take(
    settings: Settings,
    catalog: CatalogDB | None,
    broker: Broker | None,
    threads: int,
    extras: BasebackupExtras,
) -> PhysicalResult:
    t0 = time.monotonic()
    root = settings.spool_dir / "physical"
    root.mkdir(parents=True, exist_ok=True)
    backup_id, started = unique_backup_id(
        lambda b: (
            (root / b).exists()
            or (root / f".{b}.tmp").exists()
            or (catalog is not None and state_of(catalog, "physical", b) is not None)
        )
    )
    alog = for_artifact(log, f"physical/{backup_id}")
    tmp = root / f".{backup_id}.tmp"
    final = root / backup_id
    try:
        facts = _server_facts(settings)
        tmp.mkdir(mode=0o750)
        major = facts["pg_major"]
        produce = produce_classic if facts["tablespaces"] else produce_onepass
        alog.info("pg_basebackup started (%s, %d zstd threads)", produce.__name__, threads)
        made = produce(settings, tmp, backup_id, facts, threads=threads, extra_args=extras.args)
        verified_by_pg = _verifybackup(settings, tmp, major)
        manifest_pg = made.manifest_pg
        timeline, start_lsn, end_lsn = wal_range(manifest_pg)
        finished = datetime.now(UTC)
        files, spaces, checked = made.files, made.spaces, made.checked
        seg = facts["seg_size"]
        manifest = PhysicalManifest(
            backup_id=backup_id,
            label=f"pgvault-{backup_id}",
            started_at=iso(started),
            finished_at=iso(finished),
            duration_s=round(time.monotonic() - t0, 3),
            timeline=timeline,
            start_lsn=start_lsn,
            end_lsn=end_lsn,
            start_lsn_text=format_lsn(start_lsn),
            end_lsn_text=format_lsn(end_lsn),
            start_wal=segment_name(timeline, start_lsn // seg, seg),
            stop_wal=segment_name(timeline, max(start_lsn, end_lsn - 1) // seg, seg),
            seg_size=seg,
            system_identifier=facts["system_identifier"],
            pg_version=facts["pg_version"],
            pg_version_num=facts["pg_version_num"],
            pg_major=major,
            # the data directory; -Xfetch also lists the WAL it sent under pg_wal/
            data_size=sum(
                int(f["Size"]) for f in manifest_pg["Files"] if not f["Path"].startswith("pg_wal/")
            ),
            size=sum(f.size for f in files),
            verification=BaseBackupCheck(
                base_files_sha256_checked=checked,
                wal_segments=made.wal_segments,
                pg_verifybackup=verified_by_pg,
            ),
            tablespaces=tuple(TablespaceInfo(**t) for t in spaces),
            databases=tuple(DatabaseEntry(**d) for d in facts["databases"]),
            files=files,
            **extras.fields(backup_id),
        )
        spool.fsync_tree(tmp)
        spool.write_atomic(tmp / MANIFEST_NAME, manifest.to_json())
        os.rename(tmp, final)
        spool.fsync_dir(root)
    except (PgvaultError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        message = str(exc) if isinstance(exc, PgvaultError) else f"{exc.strerror}: {exc.filename}"
        if isinstance(exc, OSError) and exc.errno == 28:
            message = f"spool {settings.spool_dir} is full (no space left)"
        _record(catalog, started, "failed", message)
        raise_alert(
            settings,
            broker,
            severity="critical",
            check="backup_failed",
            subject="physical",
            summary=f"physical backup failed: {message}",
            action="fix the cause and run `pgvault backup physical` again",
        )
        alog.error("failed: %s", message)
        raise BackupError(f"physical backup failed: {message}") from None
    _record(catalog, started, "ok")
    alog.info(
        "done in %.1fs: %d bytes, %d files verified against backup_manifest",
        manifest.duration_s,
        manifest.size,
        checked,
    )
    return PhysicalResult(backup_id, final, manifest)
