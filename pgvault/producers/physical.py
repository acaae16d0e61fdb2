"""`pgvault backup physical`: pg_basebackup into the spool, verified, with manifest.json.

    pg_basebackup -Ft -Xstream --compress=client-zstd --checkpoint=fast
                  --manifest-checksums=SHA256  -> spool/physical/.<id>.tmp/
    pg_wal.tar -> pg_wal.tar.zst (PostgreSQL 15 leaves the streamed WAL uncompressed)
    verify base.tar.zst and pg_wal.tar.zst against backup_manifest
    (PostgreSQL 18+: pg_verifybackup --format=tar as well)
    manifest.json (written last) -> rename to spool/physical/<id>/

pg_basebackup is the server's own major version (pgtools.find_tool(major=...)). One
without client-side zstd (PostgreSQL 14 has only gzip; a build without zstd) writes plain
tars, compressed here to the same `*.tar.zst` layout.

The watcher announces the directory once it appears under its final name; upload, verify
and catalog handle it like any other artifact.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

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
from pgvault.pgtools import find_tool, libpq_env, major_of, run_tool, tool_major
from pgvault.producers.basebackup_verify import (
    load_manifest,
    verify_base_tar,
    verify_wal_tar,
    wal_range,
)
from pgvault.progress import watch_file
from pgvault.schemas.manifest import (
    MANIFEST_NAME,
    BaseBackupCheck,
    ManifestFile,
    PhysicalManifest,
    TablespaceInfo,
)
from pgvault.storage.codec import sha256_file
from pgvault.timeutil import iso
from pgvault.walfile import format_lsn, segment_name

log = logging.getLogger(__name__)
DATA_FILES = ("base.tar.zst", "pg_wal.tar.zst", "backup_manifest")


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
    }


def _tablespace_tars(tmp: Path, spaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tablespaces pg_basebackup wrote, each with its tar; a tablespace created or
    dropped while the backup ran is whatever the backup holds (WAL replay does the rest)."""
    out = []
    for space in spaces:
        name = f"{space['oid']}.tar.zst"
        if (tmp / name).exists():
            out.append({**space, "file": name})
    known = {t["file"] for t in out}
    extra = sorted(p.name for p in tmp.glob("*.tar.zst") if p.name not in (*DATA_FILES, *known))
    if extra:
        raise BackupError(
            f"pg_basebackup wrote {', '.join(extra)}: a tablespace pgvault did not see"
        )
    return out


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


def _compress(src: Path, dst: Path, level: int) -> None:
    cctx = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        cctx.copy_stream(fin, fout)
        fout.flush()
        os.fsync(fout.fileno())
    src.unlink()


@functools.cache
def client_zstd(tool: str) -> bool:
    """Whether this pg_basebackup compresses with zstd itself (15+ built with zstd): asked
    with a connection that cannot succeed, so only the option check answers. PostgreSQL
    14 reads any --compress value as a gzip level (atoi: "client-zstd" is 0, no
    compression), hence the version test first."""
    if tool_major(tool) < 15:
        return False
    proc = run_tool(
        [tool, "-D", "/nonexistent/pgvault-probe", "-Ft", "--compress=client-zstd",
         "--no-password", "-d", "host=/nonexistent/pgvault-probe port=1"],
        env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
        inherit=False,
        check=False,
        timeout=30,
    )  # fmt: skip
    err = proc.stderr.lower()
    return "compression" not in err and "unrecognized option" not in err


def _run_basebackup(
    settings: Settings,
    target: Path,
    backup_id: str,
    major: int | None,
    total: int | None = None,
    *,
    extra_args: tuple[str, ...] = (),
) -> bool:
    """pg_basebackup into `target`; True when it compressed the tars itself."""
    pgs = settings.postgres
    tool = find_tool("pg_basebackup", pgs.bin_dir, major)
    zstd = client_zstd(tool)
    args = [
        tool,
        "-D",
        str(target),
        "-Ft",
        "-Xstream",
        *([f"--compress=client-zstd:level={settings.storage.compression_level}"] if zstd else []),
        "--checkpoint=fast",
        "--manifest-checksums=SHA256",
        "--no-password",
        f"--label=pgvault-{backup_id}",
        *extra_args,
    ]
    env = libpq_env(pgs.host, pgs.port, pgs.user)
    with watch_file("pg_basebackup", lambda: _dir_size(target), total=total):
        run_tool(args, env=env, what="pg_basebackup")
    return zstd


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
) -> PhysicalResult:
    """One base backup into the spool. Leaves nothing behind on failure; one at a time
    (a lock in spool/physical/), which also makes a killed run's leftovers safe to remove."""
    root = settings.spool_dir / "physical"
    try:
        with spool.exclusive(root / ".lock", root, "physical backup"):
            return _take(settings, catalog, broker, extras or BasebackupExtras())
    except SpoolError as exc:
        raise BackupError(str(exc)) from None


def _take(
    settings: Settings, catalog: CatalogDB | None, broker: Broker | None, extras: BasebackupExtras
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
        alog.info("pg_basebackup started")
        major = facts["pg_major"]
        level = settings.storage.compression_level
        if not _run_basebackup(
            settings, tmp, backup_id, major, facts["db_bytes"], extra_args=extras.args
        ):
            for plain in sorted(tmp.glob("*.tar")):
                if plain.name != "pg_wal.tar":
                    _compress(plain, plain.with_name(plain.name + ".zst"), level)
        _compress(tmp / "pg_wal.tar", tmp / "pg_wal.tar.zst", level)
        manifest_pg = load_manifest(tmp / "backup_manifest")
        spaces = _tablespace_tars(tmp, facts["tablespaces"])
        checked = verify_base_tar(
            tmp / "base.tar.zst",
            manifest_pg,
            {f"pg_tblspc/{t['oid']}/": tmp / t["file"] for t in spaces},
        )
        wal_needed = verify_wal_tar(tmp / "pg_wal.tar.zst", manifest_pg, facts["seg_size"])
        verified_by_pg = _verifybackup(settings, tmp, major)
        timeline, start_lsn, end_lsn = wal_range(manifest_pg)
        finished = datetime.now(UTC)
        files = []
        for name in (*DATA_FILES, *(t["file"] for t in spaces)):
            digest = sha256_file(tmp / name)
            files.append(ManifestFile(name=name, size=digest.size, sha256=digest.sha256))
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
            data_size=sum(int(f["Size"]) for f in manifest_pg["Files"]),
            size=sum(f.size for f in files),
            verification=BaseBackupCheck(
                base_files_sha256_checked=checked,
                wal_segments=wal_needed,
                pg_verifybackup=verified_by_pg,
            ),
            tablespaces=tuple(TablespaceInfo(**t) for t in spaces),
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
