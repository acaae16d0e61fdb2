"""`pgvault backup logical`: pg_dump each database into the spool, with a manifest.

For one database:

1. open a REPEATABLE READ transaction and `pg_export_snapshot()`;
2. run `pg_dump --format=custom --snapshot=...` into a hidden directory
   `spool_dir/logical/<db>/.<backup_id>.tmp/` (<db> encoded by `pgvault.dbname.encode`);
3. the same transaction (so the dump's snapshot) counts the rows of every table: the
   counts describe exactly the rows in the dump. Tables under 8 MiB are counted while
   pg_dump runs, a few hundred to a statement (cheap round trips that hide in pg_dump's
   own waits on the server); the big ones too, with the counting backend at nice 19 so
   that their scans take only the CPU pg_dump leaves idle, when that backend provably
   runs on this machine and may be reniced; otherwise after pg_dump has finished, so
   their scans do not take CPU from it (pgvault.producers.snapshot_dump);
4. check the archive itself (`pgvault.pgdumpfile`: header, table of contents, every data
   block at its offset and complete, data for every non-empty table; `pg_restore --list`
   for archive versions that reader does not know);
5. fsync, write `manifest.json` last (the commit marker), rename the directory to
   `<backup_id>` and fsync its parent. The spool watcher announces it from there.

Any failure removes the hidden directory: the spool never holds half a backup. One
database failing does not stop the others; the caller raises the alert.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault import dbname, pg, spool
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.dbprops import database_properties
from pgvault.errors import BackupError, PgvaultError, SpoolError
from pgvault.ids import unique_backup_id
from pgvault.log import for_artifact
from pgvault.pgtables import TableRef
from pgvault.pgtools import find_tool, libpq_env, run_tool
from pgvault.producers.pgdump import TABLES_FILE, check_db_name, compression, tool_version
from pgvault.producers.snapshot_dump import dump_in_snapshot, sha256
from pgvault.timeutil import iso

if TYPE_CHECKING:
    from pgvault.broker.base import Broker  # opened (and imported) only to raise an alert
    from pgvault.schemas.manifest import LogicalManifest

log = logging.getLogger(__name__)


@dataclass
class DumpOutcome:
    db: str
    ok: bool
    backup_id: str | None = None
    path: str | None = None
    size: int = 0
    sha256: str | None = None
    tables: int = 0
    rows: int = 0
    duration_s: float = 0.0
    error: str | None = None
    # where the time went (seconds; pgvault.producers.snapshot_dump.SnapshotDump): pg_dump,
    # the row counts beside and after it, the archive check + sha256; count_niced: a flag
    timings: dict[str, float] | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _db_lock(root: Path, enc: str) -> contextlib.AbstractContextManager[None]:
    """One backup per database at a time (lock file `logical/.<encoded db>.lock`)."""
    return spool.exclusive(root / f".{enc}.lock", root / enc, "logical backup of this database")


def _friendly(exc: PgvaultError, settings: Settings, db: str) -> str:
    text = str(exc)
    where = f"{settings.postgres.host}:{settings.postgres.port}"
    if f'database "{db}" does not exist' in text:
        return f"database {db} does not exist on {where}"
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return f"the spool {settings.spool_dir} is full ({text})"
    return text


class LogicalBackup:
    """Dumps databases of the configured server into the spool."""

    def __init__(self, settings: Settings, catalog: CatalogDB | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.root = settings.spool_dir / "logical"
        self._tools: dict[str, Any] | None = None

    def tools(self, server_major: int) -> dict[str, Any]:
        """pg_dump of the server's major version (or newer) and its version; found once
        per process. pg_restore is looked up only when the archive check needs it."""
        if self._tools is None:
            pg_dump = find_tool("pg_dump", self.settings.postgres.bin_dir, server_major)
            version, major = tool_version(pg_dump)
            self._tools = {"pg_dump": pg_dump, "version": version, "major": major}
        return self._tools

    def run(self, db: str) -> DumpOutcome:
        """Back up one database; never raises for a failure of this database."""
        start = time.monotonic()
        try:
            return self._run(db)
        except PgvaultError as exc:
            return DumpOutcome(
                db, False, error=_friendly(exc, self.settings, db), duration_s=_since(start)
            )
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            error = _friendly(SpoolError(f"spool{where}: {exc.strerror or exc}"), self.settings, db)
            return DumpOutcome(db, False, error=error, duration_s=_since(start))
        except Exception as exc:  # a bug must not cost the other databases their backup
            log.debug("backup of %s failed", db, exc_info=True)
            error = f"unexpected {type(exc).__name__}: {exc}"
            return DumpOutcome(db, False, error=error, duration_s=_since(start))

    def _new_id(self, enc: str, db_dir: Path) -> tuple[str, datetime]:
        """A backup id no other backup of this database has, in the spool or the catalog."""
        catalog = self.catalog

        def taken(backup_id: str) -> bool:
            if (db_dir / backup_id).exists():
                return True
            name = f"{enc}/{backup_id}"
            return catalog is not None and catalog.has_artifact("logical", name)

        return unique_backup_id(taken)

    def _run(self, db: str) -> DumpOutcome:
        check_db_name(db)
        enc = dbname.encode(db)  # spool directory, dump file and object keys
        db_dir = self.root / enc
        with _db_lock(self.root, enc):
            backup_id, started = self._new_id(enc, db_dir)
            alog = for_artifact(log, f"logical/{enc}/{backup_id}")
            work = db_dir / f".{backup_id}.tmp"
            new_dir = not db_dir.exists()
            work.mkdir(mode=0o750, parents=True)
            try:
                manifest, timings = self._dump(db, backup_id, started, work)
                final = db_dir / backup_id
                os.rename(work, final)
                spool.fsync_dir(db_dir)
                spool.fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                if new_dir:
                    with contextlib.suppress(OSError):
                        db_dir.rmdir()
                raise
        alog.info(
            "dumped %d bytes, %d tables, %d rows in %.1fs",
            manifest.dump_size,
            manifest.table_count,
            manifest.row_count,
            manifest.duration_s,
        )
        return DumpOutcome(
            db,
            True,
            backup_id=backup_id,
            path=str(final),
            size=manifest.dump_size,
            sha256=manifest.dump_sha256,
            tables=manifest.table_count,
            rows=manifest.row_count,
            duration_s=manifest.duration_s,
            timings=timings,
        )

    def _server(
        self, conn: pg.Connection, tools: dict[str, Any]
    ) -> tuple[int, str, dict[str, Any] | None]:
        """Server version (refusing one newer than pg_dump) and the database's settings."""
        ps = self.settings.postgres
        server_num = pg.server_version_num(conn)
        server_version = str(pg.fetch_value(conn, "SHOW server_version"))
        short_version = server_version.split(" ", 1)[0]
        if server_num // 10000 > tools["major"]:
            raise BackupError(
                f"server {ps.host}:{ps.port} runs PostgreSQL {short_version} but "
                f"pg_dump is {tools['version']}: install pg_dump {server_num // 10000} or "
                "newer and point postgres.bin_dir at it"
            )
        dbinfo = pg.fetch_one(
            conn,
            "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, "
            "datctype AS ctype, pg_get_userbyid(datdba) AS owner "
            "FROM pg_database WHERE datname = current_database()",
        )
        return server_num, server_version, dbinfo

    def _dump(
        self, db: str, backup_id: str, started: datetime, work: Path
    ) -> tuple[LogicalManifest, dict[str, float]]:
        ps = self.settings.postgres
        dump = work / f"{dbname.encode(db)}.dump"
        with pg.connect(ps, db) as conn:
            tools = self.tools(pg.server_version_num(conn) // 10000)
            compress, comp_meta = compression(tools["major"], ps.dump_compression)
            server_num, server_version, dbinfo = self._server(conn, tools)
            props = database_properties(conn, db)  # issue 16 §3: what --create would carry
            # the progress bar's total (the dump is compressed: an upper bound)
            db_bytes = pg.fetch_value(conn, "SELECT pg_database_size(current_database())")
            args = [
                tools["pg_dump"],
                "--format=custom",
                f"--compress={compress}",
                "--no-password",
            ]
            env = libpq_env(ps.host, ps.port, ps.user, db)
            done = dump_in_snapshot(
                conn, args, dump, env=env, label=db, total=db_bytes, beside=_import_for_after
            )
        from pgvault.schemas.manifest import (
            MANIFEST_NAME,
            DatabaseInfo,
            DumpCompression,
            LogicalManifest,
            ManifestFile,
            TableCount,
            TablesFile,
        )

        timings = done.timings
        counts, snapshot, snapshot_at, finished = (
            done.counts,
            done.snapshot,
            done.snapshot_at,
            done.finished,
        )
        mark = time.monotonic()
        self._check_dump(dump, counts, tools)
        spool.fsync_tree(work)
        digest = sha256(dump)
        timings["check_s"] = _since(mark)
        tables = [
            TableCount(schema_name=t.schema, name=t.name, rows=n) for t, n in sorted(counts.items())
        ]
        files = [ManifestFile(name=dump.name, size=digest.size, sha256=digest.sha256)]
        tables_file: str | None = None
        if self.settings.encryption.recipients:
            # table names and row counts say something about the data: with encryption on
            # they travel in their own (encrypted) file, the manifest stays plain
            body = TablesFile(tables=tables).model_dump_json(by_alias=True, indent=1)
            spool.write_atomic(work / TABLES_FILE, body.encode())
            tdigest = sha256(work / TABLES_FILE)
            files.append(ManifestFile(name=TABLES_FILE, size=tdigest.size, sha256=tdigest.sha256))
            tables_file = TABLES_FILE
        manifest = LogicalManifest(
            cluster=self.settings.cluster,
            db=db,
            backup_id=backup_id,
            started_at=iso(started),
            snapshot_at=iso(snapshot_at),
            finished_at=iso(finished),
            duration_s=round((finished - started).total_seconds(), 3),
            source=f"{ps.host}:{ps.port}",
            server_version=server_version,
            server_version_num=server_num,
            pg_major=server_num // 10000,
            pg_dump_version=tools["version"],
            snapshot=snapshot,
            compression=DumpCompression.model_validate(comp_meta),
            database=DatabaseInfo.model_validate(dbinfo or {}),
            database_properties=dict(props),
            dump_size=digest.size,
            dump_sha256=digest.sha256,
            table_count=len(counts),
            row_count=sum(counts.values()),
            files=files,
            tables=None if tables_file else tables,
            tables_file=tables_file,
        )
        spool.write_atomic(work / MANIFEST_NAME, manifest.to_json())
        return manifest, timings

    def _check_dump(self, dump: Path, counts: dict[TableRef, int], tools: dict[str, Any]) -> None:
        """The archive must be complete and hold data for every non-empty table: read
        directly (pgvault.pgdumpfile), or by `pg_restore --list` for an archive version
        that reader does not know."""
        from pgvault import pgdumpfile
        from pgvault import pgtoc as toc

        non_empty = [t for t, n in counts.items() if n > 0]
        try:
            archive = pgdumpfile.read_archive(dump)
            pgdumpfile.check_blocks(dump, archive)
            have = archive.data_tables()
        except pgdumpfile.UnsupportedArchive:
            pg_restore = find_tool("pg_restore", self.settings.postgres.bin_dir, tools["major"])
            listing = run_tool(
                [pg_restore, "--list", "--verbose", str(dump)], what="pg_restore --list check"
            ).stdout
            have = toc.data_tables(toc.parse(listing), non_empty)
        lacking = set(non_empty) - have
        if lacking:
            names = ", ".join(sorted(t.qualified for t in lacking)[:5])
            raise BackupError(f"the dump has no data for table(s) {names}; not keeping it")


def _import_for_after() -> None:
    """The modules a backup needs once pg_dump has finished (the manifest's models, the
    archive reader, the run record), imported while pg_dump runs (dump_in_snapshot's
    `beside`): neither before it, delaying its start, nor after it, adding to the time."""
    import pgvault.catalog.runs
    import pgvault.pgdumpfile
    import pgvault.pgtoc
    import pgvault.schemas.manifest  # noqa: F401


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def run_backups(
    settings: Settings,
    dbs: list[str],
    catalog: CatalogDB | None,
    broker_factory: Callable[[], Broker] | None = None,
) -> list[DumpOutcome]:
    """Back up each database in turn; record every attempt; alert on each failure.

    broker_factory: a callable returning a Broker, called only when an alert is needed
    (raise_alert falls back to the spool when the broker does not answer)."""
    runner = LogicalBackup(settings, catalog)
    outcomes = []
    broker: Broker | None = None
    for db in dbs:
        started = datetime.now(UTC)
        outcome = runner.run(db)
        outcomes.append(outcome)
        if catalog is not None:
            from pgvault.catalog.runs import record_backup_run

            try:
                record_backup_run(
                    catalog,
                    kind="logical",
                    target=db,
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    result="ok" if outcome.ok else "failed",
                    error=outcome.error,
                )
            except PgvaultError as exc:
                log.warning("backup of %s not recorded in the catalog: %s", db, exc)
        if not outcome.ok:
            from pgvault.alerting import raise_alert

            if broker is None and broker_factory is not None:
                with contextlib.suppress(PgvaultError):
                    broker = broker_factory()
            raise_alert(
                settings,
                broker,
                severity="critical",
                check="backup_failed",
                subject=db,
                summary=f"logical backup of {db} failed: {outcome.error}",
                action="fix the cause and run `pgvault backup logical --db "
                f"{db}`; the previous verified dump is still the newest restorable one",
            )
    if broker is not None:
        broker.close()
    return outcomes
