"""Raising an alert from anywhere (backups, drills, checks).

Published as `alert.<severity>.<check>` when the broker answers; otherwise left as a file
in spool/alerts/, which the producer publishes once the broker is back. An alert is
never dropped because RabbitMQ happens to be down at the moment something failed.
"""

from __future__ import annotations

import logging

from pgvault import spool
from pgvault.broker.base import Broker
from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.schemas import AlertEvent, Severity

log = logging.getLogger(__name__)


def raise_alert(
    settings: Settings,
    broker: Broker | None,
    *,
    severity: Severity,
    check: str,
    subject: str,
    summary: str,
    value: str | None = None,
    threshold: str | None = None,
    action: str | None = None,
) -> AlertEvent:
    event = AlertEvent(
        cluster=settings.cluster,
        severity=severity,
        check=check,
        subject=subject,
        summary=summary,
        value=value,
        threshold=threshold,
        action=action,
    )
    if broker is not None:
        try:
            broker.publish_event(event)
            return event
        except PgvaultError as exc:
            log.warning(
                "alert %s not published (%s); left in the spool for the producer",
                check,
                exc,
                extra={"artifact": subject or "-"},
            )
    spool.write_alert(settings.spool_dir, severity, check, subject, summary)
    return event
