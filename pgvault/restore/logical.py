"""`pgvault restore logical`: a catalogued dump back into a database, proven twice.

1. The dump is picked from the catalog (`--backup ID`, or the newest verified dump that
   finished at or before `--at`), fetched from the spool or the store and checked against
   the producer's sha256 before any database is touched.
2. Whole database: pg_restore --jobs N into a fresh staging database
   `pgvault_restore_<hex>`; only when pg_restore reported no error and every table's row
   count equals the manifest is it renamed to the target (an existing target, allowed by
   --clean, is dropped at that moment). Anything else drops the staging database and
   leaves the target as it was.
3. Tables (`--table`): their definitions, data, indexes, constraints, triggers, owned
   sequences, views and the foreign keys pointing at them are dropped and re-created in
   the target in one transaction (pg_restore --clean --single-transaction); an error
   rolls it all back. Into a database that does not exist yet, the target is created and
   what the tables need (schemas, types, functions) is restored first.
   A partitioned table brings its whole partition tree, attached; the large objects
   the restored rows reference are copied from the dump when the target lacks them.
4. Row counts of the restored tables are compared with the manifest, per table and, for
   partitioned tables, through the parent; a whole database also gets the source's
   properties (locale, comment, connection limit, ACL, settings: `pgvault.dbprops`) and
   they are compared. The report says what differs, and a difference fails the command.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgvault import dbprops, pg, pgdumpfile, pgtables, pgtoc, pgtools
from pgvault.catalog.backups import pick_logical
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.errors import (
    IntegrityError,
    ManifestError,
    ObjectMissing,
    PgvaultError,
    RestoreError,
    UsageError,
)
from pgvault.log import ArtifactLogger, for_artifact
from pgvault.pgtools import find_tool, run_tool
from pgvault.restore import dbops, largeobjects
from pgvault.restore.logical_fetch import fetch_dump
from pgvault.restore.logical_report import (
    LargeObjectCheck,
    RestoreReport,
    TableCheck,
    add_tree_counts,
    compare,
    manifest_counts,
    resolve_tables,
)
from pgvault.schemas.manifest import LogicalManifest
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    db: str
    target_db: str
    at: datetime | None = None
    backup_id: str | None = None
    tables: tuple[str, ...] = ()
    jobs: int = 2
    clean: bool = False
    force_in_place: bool = False
    prefer_spool: bool = True  # drills set False: the copy in the store is what is tested

    def validate(self, settings: Settings) -> None:
        if self.at is not None and self.backup_id is not None:
            raise UsageError("--at and --backup are mutually exclusive")
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if not self.target_db or len(self.target_db.encode()) > 63:
            raise UsageError(f"{self.target_db!r} is not a valid database name")
        if self.target_db in ("template0", "template1", settings.postgres.dbname):
            raise RestoreError(
                f"refusing to restore into {self.target_db}: it is a template or the "
                "maintenance database (postgres.dbname)"
            )
        if self.target_db == self.db and not self.force_in_place:
            raise RestoreError(
                f"refusing to restore into the source database {self.db}: choose another "
                "--target-db, or pass --force-in-place to replace it"
            )


def check_target(settings: Settings, req: RestoreRequest) -> None:
    """Refusals that need only the request and the server: an existing target without
    --clean. Runs before anything is fetched and again just before the swap."""
    with dbops.maintenance(settings) as conn:
        existed = pg.database_exists(conn, req.target_db)
    if not existed or req.clean:
        return
    if not req.tables:
        raise RestoreError(
            f"target database {req.target_db} exists; pass --clean to replace it (it is "
            "dropped only after the restore succeeded and its row counts matched)"
        )
    if req.target_db != req.db:
        raise RestoreError(
            f"target database {req.target_db} exists; pass --clean to replace the "
            f"table(s) {', '.join(req.tables)} in it"
        )


def restore_logical(
    settings: Settings, req: RestoreRequest, *, catalog: CatalogDB, store: ObjectStore
) -> RestoreReport:
    """Restore per `req`; raises for refusals and failures (nothing changed), returns a
    report whose `mismatches` say whether the restored rows match the manifest."""
    req.validate(settings)
    backup_id = req.backup_id.rpartition("/")[2] if req.backup_id else None
    row = pick_logical(catalog, req.db, at=req.at, backup_id=backup_id)
    report = RestoreReport(
        db=req.db,
        target_db=req.target_db,
        backup=row.name,
        backup_id=row.backup_id or "",
        dump_finished_at=row.finished_at or "",
        mode="tables" if req.tables else "database",
        jobs=1 if req.tables else req.jobs,
    )
    alog = for_artifact(log, f"logical/{row.name}")
    started = time.monotonic()
    check_target(settings, req)  # before any byte is fetched
    work = settings.spool_dir / "tmp" / f"restore-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, mode=0o700)

    def preflight(manifest: LogicalManifest) -> None:
        if req.tables:
            resolve_tables(manifest.tables or [], req.tables)

    try:
        try:
            dump, manifest, report.fetched_from = fetch_dump(
                settings, store, row, work, prefer_spool=req.prefer_spool, preflight=preflight
            )
        except (IntegrityError, ManifestError, ObjectMissing) as exc:
            raise type(exc)(
                f"refusing to restore logical/{row.name}: {exc}; no database was touched"
            ) from None
        report.timings["fetch_s"] = _since(started)
        alog.info("dump fetched from the %s and its sha256 checked", report.fetched_from)
        if req.tables:
            load_tables(settings, req, dump, manifest, report)
        else:
            load_database(settings, req, dump, manifest, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.timings["total_s"] = _since(started)
    return report


def load_database(
    settings: Settings,
    req: RestoreRequest,
    dump: Path,
    manifest: LogicalManifest,
    report: RestoreReport,
) -> None:
    alog = for_artifact(log, f"logical/{report.backup}")
    with dbops.maintenance(settings) as conn:  # the target was checked before the fetch
        staging = f"pgvault_restore_{uuid.uuid4().hex[:10]}"
        props = manifest.database_properties
        dbops.create_database(conn, staging, manifest.database, props)
    swapped = False
    try:
        start = time.monotonic()
        alog.info("pg_restore --jobs %d into staging database %s", req.jobs, staging)
        args = [
            _pg_restore(settings, manifest),
            f"--jobs={req.jobs}",
            "--no-password",
            f"--dbname={dbops.dbname_arg(staging)}",
            str(dump),
        ]
        proc = run_tool(args, env=dbops.tool_env(settings), check=False)
        report.timings["restore_s"] = _since(start)
        if proc.returncode != 0:
            raise RestoreError(
                f"pg_restore failed, {req.target_db} left as it was: "
                f"{dbops.first_error(proc.stderr)}"
            )
        start = time.monotonic()
        tree = _partitions(settings, dump, manifest)
        expected = manifest_counts(manifest)
        with pg.connect(settings.postgres, staging, options="-c jit=off") as sconn:
            restored = pgtables.count_all(sconn)
            report.tables = compare(expected, restored, None)
            add_tree_counts(
                report.tables, tree, expected, lambda t: pgtables.count_through(sconn, t)
            )
        with dbops.maintenance(settings) as conn:  # one session: properties, then the swap
            if props:
                report.skipped += dbprops.apply_properties(conn, staging, props)
                actual = dbprops.database_properties(conn, staging)
                report.database_differences = dbprops.differences(props, dict(actual))
            report.timings["check_s"] = _since(start)
            if report.mismatches or report.database_differences:
                report.error = (
                    f"row counts differ from the manifest in {len(report.mismatches)} "
                    f"table(s), {len(report.database_differences)} database propert(ies) "
                    f"differ; {req.target_db} left as it was"
                )
                return
            if pg.database_exists(conn, req.target_db):
                if not req.clean:
                    raise RestoreError(f"target database {req.target_db} appeared meanwhile")
                dbops.drop_database(conn, req.target_db)
                report.replaced = True
            try:
                dbops.rename_database(conn, staging, req.target_db)
            except PgvaultError as exc:
                swapped = True  # the restored copy is all there is now: keep it
                raise RestoreError(
                    f"restored and checked into {staging}, but renaming it to "
                    f"{req.target_db} failed ({exc}); rename it by hand"
                ) from None
            swapped = True
        alog.info("restored into %s", req.target_db)
    finally:
        if not swapped:
            dbops.drop_quietly(settings, staging)


def load_tables(
    settings: Settings,
    req: RestoreRequest,
    dump: Path,
    manifest: LogicalManifest,
    report: RestoreReport,
) -> None:
    alog = for_artifact(log, f"logical/{report.backup}")
    wanted = resolve_tables(manifest.tables or [], req.tables)
    pg_restore = _pg_restore(settings, manifest)
    entries = _toc(settings, dump, manifest)
    with dbops.maintenance(settings) as conn:
        existed = pg.database_exists(conn, req.target_db)
        if existed and req.target_db != req.db and not req.clean:
            raise RestoreError(
                f"target database {req.target_db} exists; pass --clean to replace the "
                f"table(s) {', '.join(req.tables)} in it"
            )
        if not existed:
            dbops.create_database(
                conn, req.target_db, manifest.database, manifest.database_properties
            )
    done = False
    try:
        with contextlib.ExitStack() as stack:
            exists_fn = None
            if existed:
                tconn = stack.enter_context(pg.connect(settings.postgres, req.target_db))
                exists_fn = lambda refs: pgtables.existing(tconn, refs)  # noqa: E731
            selection = pgtoc.select_tables(
                entries,
                wanted,
                new_database=not existed,
                relation_exists=exists_fn or (lambda _refs: set()),
            )
        report.skipped = selection.skipped
        wanted = selection.tables  # with the partitions of partitioned tables
        for item in selection.skipped:
            alog.warning("not restored: %s", item)
        list_path = dump.with_name("restore.list")
        list_path.write_text(pgtoc.list_file(selection))
        args = [pg_restore, "--single-transaction", "--no-password", f"--use-list={list_path}"]
        if existed:
            args += ["--clean", "--if-exists"]
        args += [f"--dbname={dbops.dbname_arg(req.target_db)}", str(dump)]
        start = time.monotonic()
        names = ", ".join(t.qualified for t in wanted)
        alog.info("restoring %s into %s in one transaction", names, req.target_db)
        proc = run_tool(args, env=dbops.tool_env(settings), check=False)
        report.timings["restore_s"] = _since(start)
        if proc.returncode != 0:
            raise RestoreError(
                f"pg_restore failed and its transaction was rolled back, {req.target_db} is "
                f"unchanged: {dbops.first_error(proc.stderr)}"
            )
        done = True
        report.replaced = existed
    finally:
        if not done and not existed:
            dbops.drop_quietly(settings, req.target_db)
    _check_tables(settings, dump, entries=entries, manifest=manifest, wanted=wanted, report=report)


def _check_tables(
    settings: Settings,
    dump: Path,
    *,
    entries: list[pgtoc.TocEntry],
    manifest: LogicalManifest,
    wanted: list[pgtables.TableRef],
    report: RestoreReport,
) -> None:
    """Large objects the rows reference, then row counts per table and through parents."""
    alog = for_artifact(log, f"logical/{report.backup}")
    start = time.monotonic()
    report.large_objects = largeobjects.restore_referenced(
        settings,
        dump,
        pg_restore=_pg_restore(settings, manifest),
        entries=entries,
        target=report.target_db,
        tables=wanted,
    )
    _log_large_objects(alog, report.large_objects)
    expected = manifest_counts(manifest)
    with pg.connect(settings.postgres, report.target_db) as tconn:
        restored = {t: pgtables.count_rows(tconn, t) for t in wanted}
        report.tables = compare(expected, restored, wanted)
        add_tree_counts(
            report.tables,
            pgtoc.partitions(entries),
            expected,
            lambda t: pgtables.count_through(tconn, t),
        )
    report.timings["check_s"] = _since(start)
    if report.mismatches:
        report.error = f"row counts differ from the manifest in {len(report.mismatches)} table(s)"
    elif not report.large_objects.ok:
        report.error = (
            f"{report.large_objects.missing} large object(s) referenced by the restored rows "
            f"do not exist in {report.target_db} (the dump does not hold them either)"
        )


def _pg_restore(settings: Settings, manifest: LogicalManifest) -> str:
    """pg_restore of the dumping pg_dump's major version or newer (what can read the
    archive), the program itself rather than a wrapper script where both exist."""
    major = pgtools.major_of_version(manifest.pg_dump_version)
    return find_tool("pg_restore", settings.postgres.bin_dir, major)


def _partitions(
    settings: Settings, dump: Path, manifest: LogicalManifest
) -> dict[pgtables.TableRef, list[pgtables.TableRef]]:
    """Partitioned table -> partitions, read from the archive's table of contents
    (pg_restore --list only for an archive version pgvault.pgdumpfile does not know)."""
    try:
        return pgdumpfile.read_archive(dump).partitions()
    except (pgdumpfile.UnsupportedArchive, pgdumpfile.DumpFormatError):
        # pg_restore has just read this archive: let it list it too
        return pgtoc.partitions(_toc(settings, dump, manifest))


def _toc(settings: Settings, dump: Path, manifest: LogicalManifest) -> list[pgtoc.TocEntry]:
    pg_restore = _pg_restore(settings, manifest)
    listing = run_tool([pg_restore, "--list", "--verbose", str(dump)], what="pg_restore --list")
    return pgtoc.parse(listing.stdout)


def _log_large_objects(alog: ArtifactLogger, lo: LargeObjectCheck) -> None:
    if lo.referenced:
        alog.info(
            "large objects referenced by the restored rows: %d (%d present, %d restored, "
            "%d missing)",
            lo.referenced,
            lo.present,
            lo.restored,
            lo.missing,
        )
    if lo.missing:
        alog.warning("%d referenced large object(s) are missing after the restore", lo.missing)


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


__all__ = [
    "RestoreReport",
    "RestoreRequest",
    "TableCheck",
    "load_database",
    "load_tables",
    "restore_logical",
]
