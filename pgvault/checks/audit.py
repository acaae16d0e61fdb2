"""The `store_audit` check: is the store's proof current (invariant 13)?

store_audit/listing   age of the last complete listing pass against
                      audit.max_listing_age_hours (WARNING past it, CRITICAL past twice
                      it); CRITICAL while an artifact it found missing is still not
                      verified again.
store_audit/readback  age of the last complete read-back cycle (from the start of that
                      cycle: the oldest proof it gave) against audit.max_cycle_age_days,
                      likewise; CRITICAL while an artifact a read-back found corrupt or
                      missing is still not verified again; WARNING when the last run
                      stopped on a store error.
"""

from __future__ import annotations

from typing import Any

from pgvault.catalog import auditlog, queries
from pgvault.catalog.auditlog import AuditRunRow
from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_seconds

ACTION = (
    "run `pgvault catalog audit` (and check its timer: pgvault-audit.timer or the cron line); "
    "its output and `pgvault catalog gaps` name what is missing or damaged"
)


def _still_bad(ctx: CheckContext, subjects: list[str]) -> list[str]:
    """Those of `subjects` (kind/name) not verified again since."""
    bad = []
    for subject in subjects:
        kind, _, name = subject.partition("/")
        row = queries.state_of(ctx.catalog(), kind, name)
        if row is not None and row.state != "verified" and not row.deleted_at:
            bad.append(subject)
    return bad


def _age_status(age: float, limit: float) -> Status:
    if limit <= 0 or age <= limit:
        return Status.OK
    return Status.CRITICAL if age > 2 * limit else Status.WARNING


def _listing(ctx: CheckContext, last_run: AuditRunRow | None) -> CheckResult:
    limit = ctx.settings.audit.max_listing_age_hours * 3600
    last = auditlog.last_listing(ctx.catalog())
    if last is None:
        return CheckResult(
            "store_audit", "listing", Status.WARNING,
            "the store was never audited: nothing proves the catalog's objects are still there",
            threshold=limit or None, unit="s", action=ACTION,
        )  # fmt: skip
    age = ctx.age_s(last.finished_at or last.started_at) or 0.0
    lost = _still_bad(ctx, last.found("missing"))
    details: dict[str, Any] = {
        "run_id": last.id,
        "finished_at": last.finished_at,
        "listed": last.listed,
        "missing": last.missing,
        "still_missing": lost[:20],
    }
    status = _age_status(age, limit)
    text = f"last store listing {fmt_seconds(age)} ago: {last.listed} object(s) listed"
    if lost:
        status = Status.CRITICAL
        text += f", {len(lost)} artifact(s) found missing and not re-verified: " + ", ".join(
            lost[:3]
        )
    elif last.missing:
        text += f", {last.missing} found missing (all verified again since)"
    else:
        text += ", none missing"
    if status is Status.OK and last_run is not None and last_run.result == "failed":
        status = Status.WARNING
        text += f"; the latest audit run failed: {last_run.error}"
    if limit and age > limit:
        text += f"; older than {fmt_seconds(limit)}"
    return CheckResult(
        "store_audit", "listing", status, text, value=round(age, 1), threshold=limit or None,
        unit="s", action=None if status is Status.OK else ACTION, details=details,
    )  # fmt: skip


def _readback(ctx: CheckContext) -> CheckResult:
    limit = ctx.settings.audit.max_cycle_age_days * 86400
    cat = ctx.catalog()
    complete = auditlog.last_complete_cycle(cat)
    current = auditlog.open_cycle(cat)
    reading = auditlog.last_reading(cat)
    if complete is None and current is None:
        return CheckResult(
            "store_audit", "readback", Status.WARNING,
            "no read-back of the store has run: stored checksums are not re-proved",
            threshold=limit or None, unit="s", action=ACTION,
        )  # fmt: skip
    since = complete.started_at if complete is not None else current.started_at  # type: ignore[union-attr]
    age = ctx.age_s(since) or 0.0
    damaged = []
    if reading is not None:
        damaged = _still_bad(ctx, reading.found("corrupt") + reading.found("missing"))
    details: dict[str, Any] = {
        "complete_cycle": None if complete is None else complete.id,
        "complete_cycle_started_at": None if complete is None else complete.started_at,
        "complete_cycle_bytes": None if complete is None else complete.bytes_read,
        "open_cycle": None if current is None else current.id,
        "open_cycle_bytes": None if current is None else current.bytes_read,
        "still_damaged": damaged[:20],
    }
    status = _age_status(age, limit)
    if complete is not None:
        text = (
            f"last complete read-back cycle started {fmt_seconds(age)} ago "
            f"({complete.objects_read} artifact(s) re-proved)"
        )
    else:
        text = f"first read-back cycle still running, started {fmt_seconds(age)} ago"
    if damaged:
        status = Status.CRITICAL
        text += f"; {len(damaged)} artifact(s) failed read-back and are not re-verified: " + (
            ", ".join(damaged[:3])
        )
    if limit and age > limit:
        text += f"; older than {fmt_seconds(limit)} (raise [audit] read_bytes_per_run?)"
    return CheckResult(
        "store_audit", "readback", status, text, value=round(age, 1), threshold=limit or None,
        unit="s", action=None if status is Status.OK else ACTION, details=details,
    )  # fmt: skip


def store_audit(ctx: CheckContext) -> list[CheckResult]:
    runs = auditlog.runs(ctx.catalog(), limit=1)
    return [_listing(ctx, runs[0] if runs else None), _readback(ctx)]
