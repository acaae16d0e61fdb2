"""`pgvault restore table|database`: one table (or one database) as it was at time T,
without restoring the cluster over production (issue 20).

1. plan: the catalog's plan for T, exactly as `restore pitr` (restorable_at); a T that
   is not restorable is refused in one line naming the nearest points and the dump
   fallback with its data-loss bound. Refusals about the target come before any fetch.
2. fetch + extract: the base backup into a private scratch cluster, only the files the
   restore needs (restore/partial.py), then WAL replayed to T (restore/scratch.py).
3. dump: pg_dump of the database from the scratch cluster, data only for the selected
   tables and their partitions (restore/scratch_dump.py), with the row counts at T.
4. load: `restore logical`'s own machinery (load_tables / load_database): partition
   trees, large objects, foreign keys pointing at the tables, one transaction. With
   --target-table the rows go to a new table beside the original (a copy made in the
   scratch cluster: definitions, indexes and checks; no foreign keys, views or
   triggers point at it) so they can be compared and copied by hand.
The scratch cluster is stopped and removed whatever happens.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgvault import pg, pgtables
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import lease
from pgvault.catalog.restorable import restorable_at
from pgvault.config import Settings
from pgvault.errors import NotRestorable, RestoreError, UsageError
from pgvault.log import for_artifact
from pgvault.pgtables import TableRef
from pgvault.restore import dbops, logical
from pgvault.restore.logical_report import RestoreReport
from pgvault.restore.partial import layout_for
from pgvault.restore.pitr import not_restorable_message
from pgvault.restore.scratch import Scratch, major_of, scratch_cluster
from pgvault.restore.scratch_copy import copy_table
from pgvault.restore.scratch_dump import ScratchDump, dump_scratch
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)

SCRATCH_MAINTENANCE_DB = "postgres"  # the scratch server is watched through it

# called while the scratch cluster still runs (drills compare it with the target)
Verify = Callable[[Scratch, ScratchDump, RestoreReport], dict[str, Any]]


@dataclass(frozen=True)
class TableRestoreRequest:
    db: str
    at: datetime
    target_db: str
    tables: tuple[str, ...] = ()  # empty: the whole database (`restore database`)
    target_table: str | None = None
    clean: bool = False
    force_in_place: bool = False
    owner: str = "postgres"
    from_store: bool = False
    timeout: float = 3600
    scratch_parent: Path | None = None

    @property
    def mode(self) -> str:
        return "tables" if self.tables else "database"

    def refs(self) -> list[TableRef]:
        out = []
        for text in self.tables:
            schema, dot, name = text.partition(".")
            if not dot or not schema or not name:
                raise UsageError(f"--table {text!r}: give it as SCHEMA.TABLE")
            out.append(TableRef(schema, name))
        return out


@dataclass
class TableRestoreResult:
    mode: str
    db: str
    target_db: str
    target: str  # the T asked for
    backup_id: str = ""
    restored_to: str | None = None  # the last commit replayed (the T actually reached)
    target_table: str | None = None
    tables: list[dict[str, Any]] = field(default_factory=list)  # rows at T per table
    timings: dict[str, float] = field(default_factory=dict)
    bytes_fetched: int = 0  # base backup files + WAL to T
    bytes_extracted: int = 0
    bytes_zero_filled: int = 0
    data_size: int = 0  # the base backup's data (what a full restore extracts)
    layout: dict[str, Any] = field(default_factory=dict)
    restore: dict[str, Any] = field(default_factory=dict)  # the load step's report
    verify: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def fallback_text(answer: Any, db: str) -> str:
    """The dump that would restore `db` instead, and what it would lose."""
    options = [o for o in answer.logical if o.db == db]
    if not options:
        return f"no verified dump of {db} before it either"
    o = options[0]
    loss = f"{o.data_loss_s:.0f}s" if o.data_loss_s is not None else "unknown"
    return (
        f"fallback: the dump of {db} finished at {o.finished_at} "
        f"(`pgvault restore logical --db {db} --at {answer.target}`, loses up to {loss} "
        "of writes)"
    )


def check_request(settings: Settings, req: TableRestoreRequest) -> None:
    """Every refusal that needs no fetch: names, templates, an existing target."""
    if not req.target_db or len(req.target_db.encode()) > 63:
        raise UsageError(f"{req.target_db!r} is not a valid database name")
    if req.target_db in ("template0", "template1", settings.postgres.dbname):
        raise RestoreError(
            f"refusing to restore into {req.target_db}: it is a template or the maintenance "
            "database (postgres.dbname)"
        )
    refs = req.refs()
    if req.target_table is not None:
        if len(refs) != 1:
            raise UsageError("--target-table needs exactly one --table")
        if not req.target_table or "." in req.target_table or len(req.target_table) > 63:
            raise UsageError(
                f"--target-table {req.target_table!r}: give a table name (same schema as the table)"
            )
    with dbops.maintenance(settings) as conn:
        exists = pg.database_exists(conn, req.target_db)
    if not req.tables:
        if exists:
            raise RestoreError(
                f"target database {req.target_db} exists; `restore database` restores only "
                "into a new database (choose another --target-db)"
            )
        return
    if not exists:
        return
    if req.target_table is not None:
        copy = TableRef(refs[0].schema, req.target_table)
        with pg.connect(settings.postgres, req.target_db) as conn:
            taken = pgtables.existing(conn, [copy])
        if taken and not req.clean:
            raise RestoreError(
                f"table {copy.qualified} exists in {req.target_db}; choose another "
                "--target-table or pass --clean to replace it"
            )
        return
    if req.target_db == req.db and not (req.clean or req.force_in_place):
        raise RestoreError(
            f"restoring {', '.join(req.tables)} in place replaces the table(s) in {req.db}; "
            "pass --clean (or --force-in-place), or use --target-table / another --target-db"
        )
    if req.target_db != req.db and not req.clean:
        raise RestoreError(
            f"target database {req.target_db} exists; pass --clean to replace the table(s) "
            f"{', '.join(req.tables)} in it"
        )


def restore_at(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    req: TableRestoreRequest,
    *,
    identities: list[Any],
    verify: Verify | None = None,
) -> TableRestoreResult:
    """Restore per `req`; raises for refusals and failures, returns the report."""
    t0 = time.monotonic()
    check_request(settings, req)
    answer = restorable_at(catalog, req.at)
    if answer.plan is None:
        raise NotRestorable(
            not_restorable_message(answer).removesuffix(" (see `pgvault catalog restorable`)")
            + "; "
            + fallback_text(answer, req.db)
        )
    plan = answer.plan
    layout = layout_for(plan.backup.meta, [req.db], SCRATCH_MAINTENANCE_DB)
    alog = for_artifact(log, f"physical/{plan.backup.backup_id}")
    if not layout.known:
        alog.warning("the base backup predates its database list: every database is extracted")
    result = TableRestoreResult(
        mode=req.mode,
        db=req.db,
        target_db=req.target_db,
        target=plan.target,
        backup_id=str(plan.backup.backup_id),
        target_table=req.target_table,
        data_size=int(plan.backup.meta.get("data_size") or 0),
        bytes_fetched=sum(int(f.get("size") or 0) for f in plan.backup.files) + plan.wal_bytes,
    )
    result.timings["plan_s"] = round(time.monotonic() - t0, 2)
    work = settings.spool_dir / "tmp" / f"restore-table-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, mode=0o700)
    # the plan's backup and WAL stay out of retention's reach until the replay is over
    held = lease(
        catalog,
        f"restore {req.mode} {req.db} to {plan.target}",
        artifacts=[("physical", str(plan.backup.backup_id))],
        wal=[(p.timeline, p.first, p.last) for p in plan.window.portions],
        hours=max(1.0, req.timeout / 3600 + 1),
    )
    try:
        with (
            held,
            scratch_cluster(
                settings,
                catalog,
                store,
                at=req.at,
                layout=layout,
                identities=identities,
                owner=req.owner,
                from_store=req.from_store,
                promote=req.target_table is not None,
                timeout=req.timeout,
                parent=req.scratch_parent,
            ) as sc,
        ):
            result.timings.update(sc.timings)
            result.restored_to = sc.restored_to
            result.layout = layout.as_dict()
            result.bytes_extracted = layout.bytes_extracted
            result.bytes_zero_filled = layout.bytes_sparse
            _dump_and_load(settings, req, sc, work=work, result=result, verify=verify)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.timings["total_s"] = round(time.monotonic() - t0, 2)
    return result


def _dump_and_load(
    settings: Settings,
    req: TableRestoreRequest,
    sc: Scratch,
    *,
    work: Path,
    result: TableRestoreResult,
    verify: Verify | None,
) -> None:
    started = time.monotonic()
    scratch_pg = sc.server.settings()
    tables: list[TableRef] | None = None
    if req.tables:
        tables = _present_at_t(scratch_pg, req)
        if req.target_table is not None:
            tables = [copy_table(scratch_pg, req.db, tables[0], req.target_table)]
    dump = dump_scratch(
        scratch_pg, sc.server.bin_dir, major_of(sc.datadir), req.db, work, tables=tables
    )
    result.tables = [
        {"schema": t.schema, "name": t.name, "rows_at_target": n} for t, n in dump.counts.items()
    ]
    result.timings["dump_s"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    lreq = logical.RestoreRequest(
        db=req.db,
        target_db=req.target_db,
        tables=tuple(t.qualified for t in tables or []),
        clean=req.clean or req.target_table is not None,
        force_in_place=req.force_in_place,
    )
    report = RestoreReport(
        db=req.db,
        target_db=req.target_db,
        backup=f"scratch/{sc.backup_id}",
        backup_id=sc.backup_id,
        dump_finished_at=dump.manifest.finished_at,
        mode=req.mode,
        fetched_from="scratch",
    )
    if tables is not None:
        logical.load_tables(settings, lreq, dump.path, dump.manifest, report)
    else:
        logical.load_database(settings, lreq, dump.path, dump.manifest, report)
    result.timings["load_s"] = round(time.monotonic() - started, 2)
    result.restore = report.as_json()
    if not report.ok:
        result.error = report.error or "the restored rows differ from the scratch cluster's"
        return
    if verify is not None:
        result.verify = verify(sc, dump, report)


def _present_at_t(scratch_pg: Any, req: TableRestoreRequest) -> list[TableRef]:
    refs = req.refs()
    try:
        with pg.connect(scratch_pg, req.db) as conn:
            found = pgtables.existing(conn, refs)
    except pg.PostgresError as exc:
        raise RestoreError(f"database {req.db} at {req.at.isoformat()}: {exc}") from None
    missing = [t.qualified for t in refs if t not in found]
    if missing:
        raise RestoreError(f"table(s) {', '.join(missing)} did not exist in {req.db} at T")
    return refs
