"""`pgvault catalog audit`: one run of the scheduled store audit (invariant 13).

1. the listing pass (catalog/audit.py) marks artifacts whose objects are gone `missing`;
2. the rolling read-back pass re-proves the next part of the current cycle within
   `[audit] read_bytes_per_run` and marks what fails `corrupt`/`missing`;
3. every finding is healed from the spool when it still holds the artifact (a `ready`
   event with `reupload`, as the verify stage does: upload replaces the object, verify
   proves it again) and alerted either way;
4. the run is recorded in `audit_runs` (what `check` store_audit reads).

Findings are written to the catalog as they are found, so `catalog restorable` and
`catalog gaps` reflect them at once, even if a later step fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pgvault.catalog import auditlog
from pgvault.catalog.audit import Finding, listing_pass, readback_pass
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.log import for_artifact
from pgvault.storage import ObjectStore
from pgvault.storage.layout import Layout
from pgvault.timeutil import now_iso

log = logging.getLogger(__name__)
MAX_NAMES = 1000  # findings remembered per run (check reads them back)


@dataclass
class AuditReport:
    started_at: str
    finished_at: str = ""
    listing: bool = False
    listed: int = 0
    checked: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    budget: int = 0
    cycle_id: int | None = None
    cycle_started_at: str | None = None
    cycle_complete: bool = False
    cycle_remaining: int = 0
    cycle_remaining_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    reuploads: list[str] = field(default_factory=list)
    alerted: list[str] = field(default_factory=list)
    error: str | None = None
    run_id: int = 0

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.state == "missing"]

    @property
    def corrupt(self) -> list[Finding]:
        return [f for f in self.findings if f.state == "corrupt"]

    @property
    def result(self) -> str:
        if self.error:
            return "failed"
        return "found" if self.findings else "ok"

    def row(self) -> dict[str, Any]:
        """The audit_runs columns."""
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "listing": int(self.listing),
            "listed": self.listed,
            "missing": len(self.missing),
            "corrupt": len(self.corrupt),
            "objects_read": self.objects_read,
            "bytes_read": self.bytes_read,
            "cycle_id": self.cycle_id,
            "cycle_complete": int(self.cycle_complete),
            "reuploads": len(self.reuploads),
            "result": self.result,
            "error": self.error,
            "details": {
                "missing": [f.subject for f in self.missing][:MAX_NAMES],
                "corrupt": [f.subject for f in self.corrupt][:MAX_NAMES],
                "reuploads": self.reuploads[:MAX_NAMES],
                "alerted": self.alerted[:MAX_NAMES],
                "budget": self.budget,
                "cycle_remaining": self.cycle_remaining,
                "cycle_remaining_bytes": self.cycle_remaining_bytes,
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
            "listing": {"complete": self.listing, "listed": self.listed, "checked": self.checked},
            "readback": {
                "objects_read": self.objects_read,
                "bytes_read": self.bytes_read,
                "budget": self.budget,
                "cycle_id": self.cycle_id,
                "cycle_started_at": self.cycle_started_at,
                "cycle_complete": self.cycle_complete,
                "cycle_remaining": self.cycle_remaining,
                "cycle_remaining_bytes": self.cycle_remaining_bytes,
            },
            "missing": [f.subject for f in self.missing],
            "corrupt": [f.subject for f in self.corrupt],
            "reuploads": self.reuploads,
            "alerted": self.alerted,
        }


def _heal(settings: Settings, findings: list[Finding], report: AuditReport) -> None:
    """Re-upload from the spool what it still holds; alert every finding."""
    from pgvault.alerting import raise_alert
    from pgvault.broker import open_broker
    from pgvault.spool.scan import locate

    if not findings:
        return
    broker = None
    try:
        broker = open_broker(settings)
    except PgvaultError as exc:
        log.error("store audit: broker unavailable (%s); findings alerted via the spool", exc)
    try:
        for f in findings:
            alog = for_artifact(log, f.subject)
            art = locate(settings.spool_dir, f.kind, f.name)
            if art is not None and broker is not None:
                try:
                    broker.publish_event(art.ready_event(settings.cluster, reupload=True))
                    report.reuploads.append(f.subject)
                    alog.warning("store audit: re-upload from the spool requested")
                except PgvaultError as exc:
                    alog.error("store audit: re-upload not requested: %s", exc)
            healing = f.subject in report.reuploads
            raise_alert(
                settings,
                broker,
                severity="critical",
                check=f"artifact_{f.state}",
                subject=f.subject,
                summary=f"store audit: {f.subject} is {f.state}: {f.error}",
                action="re-uploading from the spool copy; the next drain verifies it again"
                if healing
                else "no spool copy left: take a new backup (or restore the object) and run "
                "`pgvault catalog audit` again",
            )
            report.alerted.append(f.subject)
    finally:
        if broker is not None:
            broker.close()


def run_audit(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    identities: list[Any],
    *,
    listing: bool = True,
    readback: bool = True,
    budget: int | None = None,
    new_cycle: bool = False,
) -> AuditReport:
    """One audit run; recorded in audit_runs whatever happens (a store failure is the
    run's error, and what was found before it stays marked)."""
    report = AuditReport(started_at=now_iso())
    report.budget = budget or settings.audit.read_bytes_per_run
    layout = Layout(settings.storage.prefix, settings.cluster)
    try:
        if listing:
            found = listing_pass(catalog, store, layout)
            report.listing = True
            report.listed, report.checked = found.listed, found.checked
            report.findings.extend(found.findings)
        if readback:
            _readback(settings, catalog, store, identities, report, new_cycle=new_cycle)
    except PgvaultError as exc:
        report.error = str(exc)
        log.error("store audit stopped: %s", exc)
    _heal(settings, report.findings, report)
    report.finished_at = now_iso()
    report.run_id = auditlog.record_run(catalog, report.row())
    return report


def _readback(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    identities: list[Any],
    report: AuditReport,
    *,
    new_cycle: bool,
) -> None:
    cycle = auditlog.cycle_for_run(
        catalog, report.started_at, settings.audit.cycle_days, new=new_cycle
    )
    if cycle is None:
        log.info("store audit: read-back cycle complete; the next one is not due yet")
        return
    report.cycle_id, report.cycle_started_at = cycle.id, cycle.started_at
    done = readback_pass(
        catalog,
        store,
        identities,
        since=cycle.started_at,
        budget=report.budget,
        workers=settings.audit.workers,
    )
    report.error = done.error
    report.objects_read, report.bytes_read = done.objects_read, done.bytes_read
    report.findings.extend(done.findings)
    report.cycle_remaining, report.cycle_remaining_bytes = done.remaining, done.remaining_bytes
    report.cycle_complete = done.remaining == 0 and done.error is None
    auditlog.advance_cycle(
        catalog,
        cycle.id,
        done.objects_read,
        done.bytes_read,
        now_iso() if report.cycle_complete else None,
    )
    if not report.cycle_complete:
        log.info(
            "store audit: read %d object(s), %d bytes; %d artifact(s), %d bytes left in cycle %d",
            done.objects_read,
            done.bytes_read,
            done.remaining,
            done.remaining_bytes,
            cycle.id,
        )
