"""What an alert says, independent of the channel: title, summary, labelled fields.

Readable first: what happened, where, the measured value against its threshold, and what
to do. Discord and e-mail render the same Notification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgvault.schemas import AlertEvent

LABELS = {
    "critical": "CRITICAL",
    "warning": "WARNING",
    "info": "INFO",
    "resolved": "RESOLVED",
    "digest": "DIGEST",
}
DIGEST_LISTED = 25


@dataclass(frozen=True)
class Notification:
    severity: str  # critical | warning | info | resolved | digest
    title: str  # one line
    summary: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    fingerprint: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def label(self) -> str:
        return LABELS.get(self.severity, self.severity.upper())

    def text(self) -> str:
        lines = [self.title, "", self.summary, ""]
        lines += [f"{name}: {value}" for name, value in self.fields]
        if self.fingerprint:
            lines += ["", f"fingerprint: {self.fingerprint}"]
        return "\n".join(lines) + "\n"


def _where(event: AlertEvent) -> str:
    return f"cluster {event.cluster}" + (f", {event.subject}" if event.subject else "")


def from_event(event: AlertEvent) -> Notification:
    label = LABELS.get(event.severity, event.severity.upper())
    about = f" {event.subject}" if event.subject else ""
    title = f"[{label}] {event.check}{about} on {event.cluster}"
    fields = [("Where", _where(event))]
    if event.value is not None or event.threshold is not None:
        measured = event.value or "-"
        if event.threshold:
            measured += f" (threshold {event.threshold})"
        fields.append(("Value", measured))
    if event.severity == "resolved":
        fields.append(("Status", "back to normal; no action needed"))
    elif event.action:
        fields.append(("What to do", event.action))
    fields.append(("When", event.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")))
    return Notification(
        event.severity, title, event.summary, fields, event.fingerprint, event.created_at
    )


def digest(events: list[AlertEvent], per_minute: int) -> Notification:
    """Alerts held back by the rate limit, delivered together once the burst is over."""
    cluster = events[0].cluster if events else "?"
    lines = [
        f"- [{LABELS.get(e.severity, e.severity)}] {e.check}"
        + (f" {e.subject}" if e.subject else "")
        + f": {e.summary}"
        for e in events
    ]
    shown = lines[:DIGEST_LISTED]
    if len(lines) > DIGEST_LISTED:
        shown.append(f"- ... and {len(lines) - DIGEST_LISTED} more (run `pgvault check`)")
    return Notification(
        "digest",
        f"[DIGEST] {len(events)} alert(s) on {cluster} held back by the rate limit",
        "\n".join(shown),
        [("Why", f"more than {per_minute} notifications in a minute (alerts.max_per_minute)")],
    )
