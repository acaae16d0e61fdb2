"""Backup checks, from the catalog: backup_age, backup_size, backup_duration, backup_result.

Subjects: `logical/<db>` for a database's dumps, `physical` for base backups. Only
verified, not deleted artifacts count as backups (invariant 5); their time is the time
the backup finished (the time it was verified when the producer recorded none).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_bytes, fmt_seconds

if TYPE_CHECKING:
    from pgvault.catalog.rows import ArtifactRow, BackupRunRow

SIZE_HISTORY = 7  # previous backups the last one is compared with


def _backups(ctx: CheckContext, kind: str, db: str | None, limit: int) -> list[ArtifactRow]:
    from pgvault.catalog.queries import newest_backups

    return newest_backups(ctx.catalog(), kind, db, limit)


def _targets(ctx: CheckContext) -> list[tuple[str, str, str | None]]:
    """(subject, kind, db) for every configured database, then physical."""
    out: list[tuple[str, str, str | None]] = [
        (f"logical/{db}", "logical", db) for db in ctx.settings.postgres.databases
    ]
    out.append(("physical", "physical", None))
    return out


def run_subject(kind: str, target: str) -> str:
    if kind == "logical":
        return f"logical/{target}"
    return "physical" if target in ("", "cluster") else f"{kind}/{target}"


def _backup_cmd(kind: str, db: str | None) -> str:
    return f"pgvault backup logical --db {db}" if kind == "logical" else "pgvault backup physical"


def backup_age(ctx: CheckContext) -> list[CheckResult]:
    alerts = ctx.settings.alerts
    results = []
    for subject, kind, db in _targets(ctx):
        hours = alerts.max_backup_age_hours if kind == "logical" else alerts.max_physical_age_hours
        what = "dump" if kind == "logical" else "base backup"
        if hours <= 0:
            results.append(
                CheckResult("backup_age", subject, Status.OK, "check disabled (threshold 0)")
            )
            continue
        limit_s = hours * 3600
        rows = _backups(ctx, kind, db, 1)
        action = (
            f"check the backup timer and its log; run `{_backup_cmd(kind, db)}`, then the "
            "pipeline workers, until the catalog shows it verified"
        )
        if not rows:
            results.append(
                CheckResult(
                    "backup_age",
                    subject,
                    Status.CRITICAL,
                    f"no verified {what} in the catalog",
                    threshold=limit_s,
                    unit="s",
                    action=action,
                )
            )
            continue
        row = rows[0]
        age = ctx.age_s(row.backup_time) or 0.0
        late = age > limit_s
        results.append(
            CheckResult(
                "backup_age",
                subject,
                Status.CRITICAL if late else Status.OK,
                f"last verified {what} {row.name} finished {fmt_seconds(age)} ago"
                + (f", more than {fmt_seconds(limit_s)}" if late else ""),
                value=round(age, 1),
                threshold=limit_s,
                unit="s",
                action=action if late else None,
                details={"backup": row.name, "finished_at": row.backup_time},
            )
        )
    return results


def backup_size(ctx: CheckContext) -> list[CheckResult]:
    pct = ctx.settings.alerts.size_change_pct
    results = []
    for subject, kind, db in _targets(ctx):
        rows = _backups(ctx, kind, db, SIZE_HISTORY + 1)
        if rows:  # an incremental (PostgreSQL 17+) is compared with incrementals only
            kind_of = rows[0].meta.get("backup_type", "full")
            rows = [rows[0], *(r for r in rows[1:] if r.meta.get("backup_type", "full") == kind_of)]
        sizes = [r.size for r in rows[1:] if r.size]
        if pct <= 0 or not rows or not sizes or rows[0].size is None:
            why = "check disabled (threshold 0)" if pct <= 0 else "not enough backups to compare"
            results.append(CheckResult("backup_size", subject, Status.OK, why, threshold=pct))
            continue
        last = int(rows[0].size)
        median = float(statistics.median(sizes))
        change = (last - median) / median * 100 if median else 0.0
        off = abs(change) > pct
        direction = "larger" if change > 0 else "smaller"
        results.append(
            CheckResult(
                "backup_size",
                subject,
                Status.WARNING if off else Status.OK,
                f"last backup {rows[0].name} is {fmt_bytes(last)}, {abs(change):.1f} % "
                f"{direction} than the median of the previous {len(sizes)} ({fmt_bytes(median)})",
                value=round(abs(change), 2),
                threshold=pct,
                unit="%",
                action="make sure the change is expected (data deleted or loaded, tables "
                "excluded); if not, inspect the backup before relying on it"
                if off
                else None,
                details={"size": last, "median": median, "compared": len(sizes)},
            )
        )
    return results


def _last_runs(ctx: CheckContext) -> list[BackupRunRow | str]:
    """The latest run per target, plus the subject of every configured target without one
    (a placeholder), so the output always lists the same subjects."""
    from pgvault.catalog.runs import last_backup_runs

    runs: list[BackupRunRow | str] = list(last_backup_runs(ctx.catalog()))
    seen = {run_subject(r.kind, r.target) for r in runs if not isinstance(r, str)}
    for subject, kind, db in _targets(ctx):
        if subject not in seen:
            runs.append(run_subject(kind, db or "cluster"))
    return runs


def _no_run(name: str, run: BackupRunRow | str) -> CheckResult | None:
    if not isinstance(run, str):
        return None
    return CheckResult(name, run, Status.OK, "no backup run recorded yet")


def backup_duration(ctx: CheckContext) -> list[CheckResult]:
    limit_s = ctx.settings.alerts.max_duration_minutes * 60
    results = []
    for run in _last_runs(ctx):
        if placeholder := _no_run("backup_duration", run):
            results.append(placeholder)
            continue
        assert not isinstance(run, str)
        subject = run_subject(run.kind, run.target)
        duration = float(run.duration_s or 0.0)
        slow = 0 < limit_s < duration
        results.append(
            CheckResult(
                "backup_duration",
                subject,
                Status.WARNING if slow else Status.OK,
                f"last {run.kind} backup run ({run.result}) started {run.started_at[:19]}"
                f" took {fmt_seconds(duration)}"
                + (f", more than {fmt_seconds(limit_s)}" if slow else ""),
                value=round(duration, 1),
                threshold=limit_s or None,
                unit="s",
                action="look for lock waits, a slow store link or a grown database; "
                "raise alerts.max_duration_minutes if the growth is expected"
                if slow
                else None,
                details={"started_at": run.started_at, "result": run.result},
            )
        )
    return results


def backup_result(ctx: CheckContext) -> list[CheckResult]:
    results = []
    for run in _last_runs(ctx):
        if placeholder := _no_run("backup_result", run):
            results.append(placeholder)
            continue
        assert not isinstance(run, str)
        subject = run_subject(run.kind, run.target)
        failed = run.result != "ok"
        cmd = _backup_cmd(run.kind, run.target)
        error = " ".join(str(run.error or "no error recorded").split())[:300]
        results.append(
            CheckResult(
                "backup_result",
                subject,
                Status.CRITICAL if failed else Status.OK,
                f"last {run.kind} backup run started {run.started_at[:19]} "
                + (f"failed: {error}" if failed else "succeeded"),
                action=f"read the backup log, fix the cause and run `{cmd}`" if failed else None,
                details={"started_at": run.started_at, "result": run.result},
            )
        )
    return results
