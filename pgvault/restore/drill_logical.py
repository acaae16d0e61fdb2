"""`pgvault drill logical`: the weekly proof that last night's dump restores.

For each database: fetch the newest verified dump **from the store** (never the spool:
the drill tests the copy that survives losing this host), restore it with the same code
as `restore logical` into the scratch database `<db>_verify_<YYYYMMDD>`, compare every
table's row count with the manifest, run pg_amcheck on the result when it is available,
record the drill (its duration up to a checked restore is the measured RTO), drop the
scratch database and raise `drill_failed` when anything went wrong.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgvault import pg
from pgvault.alerting import raise_alert
from pgvault.broker.base import Broker
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.runs import record_drill
from pgvault.config import Settings
from pgvault.errors import PgvaultError, PostgresError
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, last_line, run_tool
from pgvault.restore import dbops
from pgvault.restore.logical import RestoreReport, RestoreRequest, restore_logical
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)

SUFFIX_LEN = len("_verify_20261124")


@dataclass
class DrillOutcome:
    db: str
    result: str  # ok | failed
    scratch_db: str
    backup: str | None = None
    dump_finished_at: str | None = None
    rto_s: float | None = None  # fetch + restore + row-count check
    duration_s: float = 0.0  # the whole drill, amcheck and clean-up included
    tables: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    database_differences: list[str] = field(default_factory=list)  # locale, ACL, settings...
    amcheck: str = "skipped"  # ok | failed | skipped: <why>
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}  # `result` kept for compatibility


def scratch_name(db: str, when: datetime) -> str:
    """'<db>_verify_<YYYYMMDD>' (UTC date), made of safe characters, at most 63 bytes."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", db)[: 63 - SUFFIX_LEN]
    return f"{safe}_verify_{when.astimezone(UTC):%Y%m%d}"


def amcheck(settings: Settings, dbname: str) -> str:
    """'ok', 'failed: ...' or 'skipped: ...' for pg_amcheck on a database."""
    try:
        tool = find_tool("pg_amcheck", settings.postgres.bin_dir)
    except PostgresError:
        return "skipped: pg_amcheck not installed"
    with pg.connect(settings.postgres, dbname) as conn:
        available = pg.fetch_value(
            conn, "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
        )
    if not available:
        return "skipped: the amcheck extension is not available on the server"
    proc = run_tool(
        [tool, "--install-missing", "--no-password", dbname],
        env=dbops.tool_env(settings),
        check=False,
    )
    if proc.returncode != 0:
        return f"failed: {last_line(proc.stdout or proc.stderr)}"
    return "ok"


class LogicalDrill:
    def __init__(
        self,
        settings: Settings,
        *,
        catalog: CatalogDB,
        store: ObjectStore,
        broker: Broker | None,
        jobs: int = 2,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.broker = broker
        self.jobs = jobs

    def run(self, db: str) -> DrillOutcome:
        started = datetime.now(UTC)
        t0 = time.monotonic()
        scratch = scratch_name(db, started)
        outcome = DrillOutcome(db=db, result="failed", scratch_db=scratch)
        alog = for_artifact(log, f"logical/{db}")
        report: RestoreReport | None = None
        rto_at = started
        try:
            with dbops.maintenance(self.settings) as conn:
                dbops.drop_database(conn, scratch)  # a leftover of a drill that crashed
            report = restore_logical(
                self.settings,
                RestoreRequest(db, scratch, jobs=self.jobs, clean=True, prefer_spool=False),
                catalog=self.catalog,
                store=self.store,
            )
            rto_at = datetime.now(UTC)
            outcome.rto_s = round(time.monotonic() - t0, 3)
            outcome.backup = report.backup
            outcome.dump_finished_at = report.dump_finished_at
            outcome.tables = len(report.tables)
            outcome.mismatches = [asdict(t) for t in report.mismatches]
            outcome.database_differences = report.database_differences
            if report.ok:
                outcome.amcheck = amcheck(self.settings, scratch)
            if not report.ok:
                outcome.error = report.error
            elif outcome.amcheck.startswith("failed"):
                outcome.error = f"pg_amcheck found problems in {scratch}: {outcome.amcheck}"
            else:
                outcome.result = "ok"
        except PgvaultError as exc:
            outcome.error = str(exc)
            rto_at = datetime.now(UTC)
        except Exception as exc:  # recorded and alerted like any failure
            log.debug("drill of %s failed", db, exc_info=True)
            outcome.error = f"unexpected {type(exc).__name__}: {exc}"
            rto_at = datetime.now(UTC)
        finally:
            dbops.drop_quietly(self.settings, scratch)
        outcome.duration_s = round(time.monotonic() - t0, 3)
        self._record(outcome, started, rto_at, report)
        if outcome.ok:
            alog.info("drill ok: %s restored and checked in %.1fs", outcome.backup, outcome.rto_s)
        else:
            self._alert(outcome)
        return outcome

    def _record(
        self,
        outcome: DrillOutcome,
        started: datetime,
        rto_at: datetime,
        report: RestoreReport | None,
    ) -> None:
        details = {
            "backup_id": report.backup_id if report else None,
            "dump_finished_at": outcome.dump_finished_at,
            "scratch_db": outcome.scratch_db,
            "fetched_from": report.fetched_from if report else None,
            "jobs": self.jobs,
            "tables": outcome.tables,
            "mismatches": outcome.mismatches,
            "database_differences": outcome.database_differences,
            "amcheck": outcome.amcheck,
            "timings": report.timings if report else {},
            "duration_s": outcome.duration_s,
            "error": outcome.error,
        }
        record_drill(
            self.catalog,
            kind="logical",
            target=outcome.db,
            backup=outcome.backup or "",
            started_at=started,
            finished_at=rto_at,
            result=outcome.result,
            details=details,
        )

    def _alert(self, outcome: DrillOutcome) -> None:
        raise_alert(
            self.settings,
            self.broker,
            severity="critical",
            check="drill_failed",
            subject=outcome.db,
            summary=f"restore drill of {outcome.db} failed: {outcome.error}",
            action="the newest dump may not be restorable: check it (`pgvault catalog list "
            "--kind logical`), take a new backup and run `pgvault drill logical` again",
        )
