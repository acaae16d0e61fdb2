"""Running the checks, rendering the report (text, Nagios, JSON) and publishing alerts.

`check` is stateless about alerts: every failing result publishes
`alert.<severity>.<check>` and every OK result publishes `alert.resolved.<check>` for its
fingerprint; the alert worker deduplicates, re-notifies, and ignores resolves for
fingerprints it never alerted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgvault.catalog.db import iso
from pgvault.checks import archiver, audit, backups, drills, infra, wal
from pgvault.checks.base import CheckContext, CheckResult, Status, unknown, worst
from pgvault.config import Settings
from pgvault.errors import PgvaultError, UsageError

log = logging.getLogger(__name__)

CheckFn = Callable[[CheckContext], list[CheckResult]]

CHECKS: dict[str, CheckFn] = {
    "backup_age": backups.backup_age,
    "backup_size": backups.backup_size,
    "backup_duration": backups.backup_duration,
    "backup_result": backups.backup_result,
    "upload_lag": wal.upload_lag,
    "archiver": archiver.archiver,
    "wal_gaps": wal.wal_gaps,
    "queues": infra.queues,
    "disk": infra.disk,
    "store": infra.store,
    "drills": drills.drills,
    "store_audit": audit.store_audit,
}
_NAGIOS_UOM = {"s": "s", "%": "%", "bytes": "B"}


@dataclass
class Report:
    cluster: str
    checked_at: datetime
    results: list[CheckResult]
    published: int = 0
    spooled: int = 0
    alerts_enabled: bool = True
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {s.name: 0 for s in Status}
        for r in self.results:
            self.counts[r.status.name] += 1

    @property
    def status(self) -> Status:
        return worst([r.status for r in self.results])

    @property
    def exit_code(self) -> int:
        return int(self.status)

    def as_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "checked_at": iso(self.checked_at),
            "status": self.status.name,
            "exit_code": self.exit_code,
            "counts": self.counts,
            "alerts": {
                "enabled": self.alerts_enabled,
                "published": self.published,
                "spooled": self.spooled,
            },
            "checks": [r.as_json(self.cluster) for r in self.results],
        }

    def lines(self) -> list[str]:
        """One line per check for a terminal."""
        out = []
        for r in self.results:
            out.append(
                f"{r.status.name:<8} {r.name:<15} {r.subject:<16} {r.measure:<22} {r.message}"
            )
        return out

    def nagios(self) -> str:
        """One Nagios plugin line: `PGVAULT STATE - summary | perfdata`."""
        bad = [r for r in self.results if r.status is not Status.OK]
        order = (Status.CRITICAL, Status.UNKNOWN, Status.WARNING)
        bad.sort(key=lambda r: order.index(r.status))
        tally = ", ".join(f"{self.counts[s.name]} {s.name.lower()}" for s in (*order, Status.OK))
        summary = "; ".join(f"{r.status.name} {r.name} {r.subject}: {r.message}" for r in bad)
        text = f"PGVAULT {self.status.name} - {tally}" + (f"; {summary}" if summary else "")
        perf = []
        for r in self.results:
            if r.value is None:
                continue
            label = f"{r.name}_{r.subject}".replace("'", "_").replace("=", "_").replace(" ", "_")
            warn = "" if r.threshold is None else f"{r.threshold:g}"
            perf.append(f"'{label}'={r.value:g}{_NAGIOS_UOM.get(r.unit, '')};{warn};;0;")
        return text.replace("|", "/") + (" | " + " ".join(perf) if perf else "")


def select(only: list[str]) -> list[str]:
    names = list(only) or list(CHECKS)
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise UsageError(f"unknown check {bad[0]!r} (choose from {', '.join(CHECKS)})")
    return names


def run_checks(settings: Settings, only: list[str] | None = None) -> Report:
    names = select(only or [])
    ctx = CheckContext(settings)
    results: list[CheckResult] = []
    try:
        for name in names:
            try:
                results.extend(CHECKS[name](ctx))
            except PgvaultError as exc:
                results.append(unknown(name, "", str(exc)))
            except Exception as exc:  # a bug must not hide the other checks
                log.debug("check %s crashed", name, exc_info=True)
                results.append(unknown(name, "", f"internal error {type(exc).__name__}: {exc}"))
    finally:
        ctx.close()
    return Report(settings.cluster, ctx.now, results)


def publish(report: Report, settings: Settings) -> None:
    """Publish one alert or resolve per result; failing ones fall back to the spool."""
    from pgvault.alerting import raise_alert
    from pgvault.broker import open_broker
    from pgvault.schemas import AlertEvent

    broker = open_broker(settings)
    broker_ok = True
    try:
        for r in report.results:
            fields: dict[str, Any] = {
                "severity": r.severity,
                "check": r.name,
                "subject": r.subject,
                "summary": r.message,
                "value": r.display_value,
                "threshold": r.display_threshold,
                "action": r.action,
            }
            if broker_ok:
                try:
                    broker.publish_event(AlertEvent(cluster=settings.cluster, **fields))
                    report.published += 1
                    continue
                except PgvaultError as exc:
                    broker_ok = False
                    log.warning("alerts not published (%s); failing checks go to the spool", exc)
            if r.status is not Status.OK:  # resolves are not spooled: the next run resends
                raise_alert(settings, None, **fields)
                report.spooled += 1
    finally:
        broker.close()
