"""Running the checks, rendering the report (text, Nagios, JSON) and publishing alerts.

`check` is stateless about alerts: every failing result publishes
`alert.<severity>.<check>` and every OK result publishes `alert.resolved.<check>` for its
fingerprint; the alert worker deduplicates, re-notifies, and ignores resolves for
fingerprints it never alerted on.

The broker itself may be what failed: when `check` cannot publish, or the alert queue has
no consumer, it delivers its critical alerts straight to the configured channels itself
(through the alert stage's logic and de-duplication state, so the alert worker does not
send them again later) and says so in its output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgvault.checks import archiver, audit, backups, drills, infra, spool, wal
from pgvault.checks.base import CheckContext, CheckResult, Status, align, unknown, worst
from pgvault.config import Settings
from pgvault.errors import PgvaultError, UsageError
from pgvault.timeutil import iso

if TYPE_CHECKING:
    from pgvault.broker.base import Broker
    from pgvault.schemas import AlertEvent

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
    "spool": spool.spool,
}
_NAGIOS_UOM = {"s": "s", "%": "%", "bytes": "B"}


@dataclass
class Report:
    cluster: str
    checked_at: datetime
    results: list[CheckResult]
    published: int = 0
    spooled: int = 0
    direct: int = 0  # critical alerts `check` delivered to the channels itself
    direct_note: str = ""  # why, and what happened (one line), empty when not needed
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
            "ok": self.status is Status.OK,
            "checked_at": iso(self.checked_at),
            "status": self.status.name,
            "exit_code": self.exit_code,
            "counts": self.counts,
            "alerts": {
                "enabled": self.alerts_enabled,
                "published": self.published,
                "spooled": self.spooled,
                "direct": self.direct,
                "direct_note": self.direct_note,
            },
            "checks": [r.as_json(self.cluster) for r in self.results],
        }

    def lines(self) -> list[str]:
        """One line per check for a terminal (and one about direct alert delivery)."""
        rows = [(r.status.name, r.name, r.subject, r.measure, r.message) for r in self.results]
        out = align(rows, (8, 15, 16, 22))
        if self.direct_note:
            out.append(f"{'ALERTS':<8} {self.direct_note}")
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


def _alert_consumers(broker: Broker) -> int | None:
    """Consumers on the alert queue; None when the broker does not answer."""
    try:
        depths = broker.queue_depths()
    except PgvaultError as exc:
        log.warning("broker unreachable (%s); alerts go to the spool", exc)
        return None
    name = broker.topology.queue("alert")
    return next((d.consumers for d in depths if d.name == name), 0)


def publish(report: Report, settings: Settings) -> None:
    """Publish one alert or resolve per result; failing ones fall back to the spool.
    Critical alerts the pipeline cannot deliver now (broker down, no alert worker) are
    delivered directly as well."""
    from pgvault.alerting import raise_alert
    from pgvault.broker import open_broker
    from pgvault.schemas import AlertEvent

    broker = open_broker(settings)
    consumers = _alert_consumers(broker)
    broker_ok = consumers is not None
    stranded: list[AlertEvent] = []
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
                    event = AlertEvent(cluster=settings.cluster, **fields)
                    broker.publish_event(event)
                    report.published += 1
                    if (
                        r.status is Status.CRITICAL
                        and not consumers
                        and settings.alerts.direct_if_no_consumer
                    ):
                        stranded.append(event)
                    continue
                except PgvaultError as exc:
                    broker_ok = False
                    log.warning("alerts not published (%s); failing checks go to the spool", exc)
            if r.status is not Status.OK:  # resolves are not spooled: the next run resends
                event = raise_alert(settings, None, **fields)
                report.spooled += 1
                if r.status is Status.CRITICAL:
                    stranded.append(event)
    finally:
        broker.close()
    if stranded:
        why = "broker unreachable" if not broker_ok else "no consumer on the alert queue"
        deliver_direct(report, settings, stranded, why)


def deliver_direct(report: Report, settings: Settings, events: list[AlertEvent], why: str) -> None:
    """Send critical alerts straight to Discord/e-mail with the alert stage's dedupe
    state; the outcome goes into the report (one line)."""
    from pgvault.consumers.alert import AlertStage
    from pgvault.errors import ChannelError

    try:
        stage = AlertStage.from_settings(settings)
    except PgvaultError as exc:
        report.direct_note = f"{why}: {len(events)} critical alert(s) NOT delivered ({exc})"
        return
    if not stage.channels:
        report.direct_note = (
            f"{why}: {len(events)} critical alert(s) not delivered (no alert channel configured)"
        )
        return
    sent = repeats = 0
    failures: list[str] = []
    for event in events:
        try:
            decision = stage.notify(event)
        except (ChannelError, PgvaultError) as exc:
            failures.append(str(exc))
            continue
        if decision == "sent":
            sent += 1
        else:
            repeats += 1
    where = ", ".join(ch.name for ch in stage.channels)
    note = f"{why}: {sent} critical alert(s) delivered directly to {where}"
    if repeats:
        note += f", {repeats} already notified (de-duplicated)"
    if failures:
        note += f"; {len(failures)} FAILED: {failures[0]}"
    report.direct = sent
    report.direct_note = note
    log.warning("%s", note)
