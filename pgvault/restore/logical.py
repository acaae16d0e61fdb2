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
4. Row counts of the restored tables are compared with the manifest; the report says
   which differ, and a difference makes the command fail.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgvault import pg, pgtables, pgtoc
from pgvault.catalog.backups import pick_logical
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.rows import DumpRow
from pgvault.config import Settings
from pgvault.errors import (
    IntegrityError,
    ManifestError,
    ObjectMissing,
    PgvaultError,
    RestoreError,
    UsageError,
)
from pgvault.log import for_artifact
from pgvault.pgtables import TableRef
from pgvault.pgtools import find_tool, run_tool
from pgvault.producers.pgdump import TABLES_FILE  # row counts, on their own when encrypted
from pgvault.progress import byte_progress
from pgvault.restore import dbops
from pgvault.restore.fetch import fetch_file, free_bytes
from pgvault.schemas.manifest import MANIFEST_NAME, LogicalManifest, TableCount, parse_logical
from pgvault.storage import ObjectStore
from pgvault.storage.codec import load_identities

log = logging.getLogger(__name__)

MANIFEST = MANIFEST_NAME
SPACE_MARGIN = 64 << 20


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


@dataclass
class TableCheck:
    schema: str
    name: str
    expected: int | None  # rows in the manifest (None: not in the dump's snapshot)
    restored: int | None  # rows after the restore (None: table missing)

    @property
    def ok(self) -> bool:
        return self.expected == self.restored


@dataclass
class RestoreReport:
    db: str
    target_db: str
    backup: str  # artifact name "<db>/<backup_id>"
    backup_id: str
    dump_finished_at: str
    mode: str  # "database" | "tables"
    fetched_from: str = ""  # "spool" | "store"
    jobs: int = 1
    replaced: bool = False  # an existing target database was replaced
    tables: list[TableCheck] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def mismatches(self) -> list[TableCheck]:
        return [t for t in self.tables if not t.ok]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [dict(asdict(t), ok=t.ok) for t in self.tables]
        data["mismatches"] = len(self.mismatches)
        data["ok"] = self.ok
        return data


def table_counts(tables: Sequence[TableCount]) -> dict[TableRef, int]:
    return {TableRef(t.schema_name, t.name): t.rows for t in tables}


def manifest_counts(manifest: LogicalManifest) -> dict[TableRef, int]:
    """Rows per table as the dump's manifest (or its tables file, loaded) records them."""
    return table_counts(manifest.tables or [])


def compare(
    expected: dict[TableRef, int], restored: dict[TableRef, int], only: list[TableRef] | None
) -> list[TableCheck]:
    names = only if only is not None else sorted(set(expected) | set(restored))
    return [TableCheck(t.schema, t.name, expected.get(t), restored.get(t)) for t in names]


def resolve_tables(tables: Sequence[TableCount], requested: tuple[str, ...]) -> list[TableRef]:
    """'schema.name' or a bare 'name' (unique across schemas) -> tables of the dump."""
    known = sorted(table_counts(tables))
    out: list[TableRef] = []
    for text in requested:
        schema, dot, name = text.partition(".")
        exact = [t for t in known if dot and t.schema == schema and t.name == name]
        bare = [t for t in known if t.name == text]
        found = exact or bare
        if not found:
            sample = ", ".join(t.qualified for t in known[:8])
            raise RestoreError(f"table {text} is not in the dump (it has: {sample} ...)")
        if len(found) > 1:
            names = ", ".join(t.qualified for t in found)
            raise RestoreError(f"table {text} is ambiguous ({names}); qualify it with a schema")
        if found[0] not in out:
            out.append(found[0])
    return out


def fetch_dump(
    settings: Settings,
    store: ObjectStore,
    row: DumpRow,
    work: Path,
    *,
    prefer_spool: bool,
) -> tuple[Path, LogicalManifest, str]:
    """The dump and its manifest in `work`, both proven by sha256; (dump, manifest, source)."""
    identities = (
        load_identities(settings.encryption.identity_file)
        if settings.encryption.identity_file
        else []
    )
    files = row.file_infos()
    man_info = next((f for f in files if f.name == MANIFEST), None)
    tables_info = next((f for f in files if f.name == TABLES_FILE), None)
    dumps = [f for f in files if f.name not in (MANIFEST, TABLES_FILE)]
    if man_info is None or len(dumps) != 1:
        raise IntegrityError(f"catalog entry logical/{row.name} does not list a dump")
    common: dict[str, Any] = {
        "kind": "logical",
        "name": row.name,
        "identities": identities,
        "prefer_spool": prefer_spool,
    }
    fetch_file(settings, store, man_info, work / MANIFEST, **common)
    where = f"logical/{row.name}"
    manifest = parse_logical((work / MANIFEST).read_bytes(), where)
    listed = manifest.file(dumps[0].name)
    if listed is None or listed.sha256 != dumps[0].sha256:
        raise IntegrityError(f"{where}: manifest and catalog disagree on the dump")
    if tables_info is not None:  # encrypted archives keep the row counts out of the manifest
        fetch_file(settings, store, tables_info, work / TABLES_FILE, **common)
        manifest = manifest.with_tables((work / TABLES_FILE).read_bytes(), where)
    need = dumps[0].size + SPACE_MARGIN
    if free_bytes(work) < need:
        raise RestoreError(
            f"not enough free space in {work} for the {dumps[0].size} byte dump; free some "
            "space in the spool's filesystem"
        )
    dump = work / dumps[0].name
    with byte_progress(f"fetch {dumps[0].name}", dumps[0].size) as advance:
        source = fetch_file(settings, store, dumps[0], dump, advance=advance, **common)
    return dump, manifest, source


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
    work = settings.spool_dir / "tmp" / f"restore-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, mode=0o700)
    try:
        try:
            dump, manifest, report.fetched_from = fetch_dump(
                settings, store, row, work, prefer_spool=req.prefer_spool
            )
        except (IntegrityError, ManifestError, ObjectMissing) as exc:
            raise type(exc)(
                f"refusing to restore logical/{row.name}: {exc}; no database was touched"
            ) from None
        report.timings["fetch_s"] = _since(started)
        alog.info("dump fetched from the %s and its sha256 checked", report.fetched_from)
        if req.tables:
            _restore_tables(settings, req, dump, manifest, report)
        else:
            _restore_database(settings, req, dump, manifest, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.timings["total_s"] = _since(started)
    return report


def _restore_database(
    settings: Settings,
    req: RestoreRequest,
    dump: Path,
    manifest: LogicalManifest,
    report: RestoreReport,
) -> None:
    alog = for_artifact(log, f"logical/{report.backup}")
    with dbops.maintenance(settings) as conn:
        if pg.database_exists(conn, req.target_db) and not req.clean:
            raise RestoreError(
                f"target database {req.target_db} exists; pass --clean to replace it (it is "
                "dropped only after the restore succeeded and its row counts matched)"
            )
        staging = f"pgvault_restore_{uuid.uuid4().hex[:10]}"
        dbops.create_database(conn, staging, manifest.database)
    swapped = False
    try:
        start = time.monotonic()
        alog.info("pg_restore --jobs %d into staging database %s", req.jobs, staging)
        args = [
            find_tool("pg_restore", settings.postgres.bin_dir),
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
        with pg.connect(settings.postgres, staging, options="-c jit=off") as sconn:
            restored = pgtables.count_all(sconn)
        report.tables = compare(manifest_counts(manifest), restored, None)
        report.timings["check_s"] = _since(start)
        if report.mismatches:
            report.error = (
                f"row counts differ from the manifest in {len(report.mismatches)} table(s); "
                f"{req.target_db} left as it was"
            )
            return
        with dbops.maintenance(settings) as conn:
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


def _restore_tables(
    settings: Settings,
    req: RestoreRequest,
    dump: Path,
    manifest: LogicalManifest,
    report: RestoreReport,
) -> None:
    alog = for_artifact(log, f"logical/{report.backup}")
    wanted = resolve_tables(manifest.tables or [], req.tables)
    pg_restore = find_tool("pg_restore", settings.postgres.bin_dir)
    listing = run_tool([pg_restore, "--list", "--verbose", str(dump)], what="pg_restore --list")
    entries = pgtoc.parse(listing.stdout)
    with dbops.maintenance(settings) as conn:
        existed = pg.database_exists(conn, req.target_db)
        if existed and req.target_db != req.db and not req.clean:
            raise RestoreError(
                f"target database {req.target_db} exists; pass --clean to replace the "
                f"table(s) {', '.join(req.tables)} in it"
            )
        if not existed:
            dbops.create_database(conn, req.target_db, manifest.database)
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
    start = time.monotonic()
    with pg.connect(settings.postgres, req.target_db) as tconn:
        restored = {t: pgtables.count_rows(tconn, t) for t in wanted}
    report.tables = compare(manifest_counts(manifest), restored, wanted)
    report.timings["check_s"] = _since(start)
    if report.mismatches:
        report.error = f"row counts differ from the manifest in {len(report.mismatches)} table(s)"


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


__all__ = ["RestoreReport", "RestoreRequest", "restore_logical"]
