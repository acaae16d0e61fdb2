"""Alert stage: `alert.#` -> the configured channels.

(Channels, dedupe and resolve are filled in by the monitoring issue; until then every
alert is logged, which systemd's journal keeps.)
"""

from __future__ import annotations

import logging

from pgvault.schemas import AlertEvent, ArtifactEvent

log = logging.getLogger(__name__)


class AlertStage:
    name = "alert"

    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        if not isinstance(event, AlertEvent):
            return
        level = logging.INFO if event.severity in ("info", "resolved") else logging.ERROR
        log.log(
            level,
            "[%s] %s: %s",
            event.severity,
            event.check,
            event.summary,
            extra={"artifact": event.subject or "-"},
        )
