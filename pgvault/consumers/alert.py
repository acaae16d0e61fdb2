"""Alert stage: `alert.#` -> Discord webhook and SMTP e-mail, deduplicated.

Per event (AlertState.decide, atomic in the shared SQLite state):
- a new fingerprint (cluster:check:subject), a severity change, or the same severity
  after alerts.renotify_minutes: notify every configured channel;
- the same severity again within the interval: suppressed (counted as a repeat);
- `resolved`: sent once, and only for a fingerprint that was alerted;
- over alerts.max_per_minute notifications in the last minute: held, and delivered as a
  single digest once the minute has room again (checked on every message and every
  FLUSH_INTERVAL_S by a background thread of the long-running worker).

Delivery is tracked per channel and event: when one channel fails, the stage raises a
transient ChannelError, the worker's retry policy brings the message back after the
broker.retry_delays backoff, and only the channels that did not get it are tried again;
after the last retry the message is dead-lettered (never dropped). Nothing here logs the
webhook URL or the SMTP password.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from pgvault.alerts.channels import Channel, build_channels
from pgvault.alerts.message import Notification, digest, from_event
from pgvault.alerts.state import AlertState, Policy
from pgvault.config import Settings
from pgvault.errors import ChannelError, PgvaultError
from pgvault.log import ArtifactLogger, for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent

log = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 15.0
FLUSH_LEASE_S = 120.0


class AlertStage:
    name = "alert"

    def __init__(
        self,
        state: AlertState,
        channels: Sequence[Channel],
        policy: Policy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.channels = list(channels)
        self.policy = policy
        self.clock = clock
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertStage:
        alerts = settings.alerts
        policy = Policy(
            renotify_s=alerts.renotify_minutes * 60,
            claim_ttl_s=sum(settings.broker.retry_delays) + 300.0,
            max_per_minute=alerts.max_per_minute,
        )
        stage = cls(AlertState(settings.alert_state_path), build_channels(alerts), policy)
        described = ", ".join(ch.describe() for ch in stage.channels) or "none (log only)"
        log.info("alert channels: %s; state %s", described, settings.alert_state_path)
        return stage

    # -- one message -----------------------------------------------------------------
    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        if isinstance(event, AlertEvent):
            self.notify(event)

    def notify(self, event: AlertEvent) -> str:
        """Decide (dedupe, rate limit) and deliver one alert; returns the decision,
        "sent" when it went to every channel. Raises ChannelError when one failed.
        Also used by `check` to deliver directly when the broker is down."""
        self.flush_quietly()
        alog = for_artifact(log, f"alert/{event.check}/{event.subject or '-'}")
        decision = self.state.decide(event, self.clock(), self.policy)
        note = from_event(event)
        if decision in ("repeat", "quiet", "stale", "duplicate"):
            alog.debug("%s: not sent (%s)", note.title, decision)
            return decision
        if decision == "hold":
            alog.warning("%s: held for the next digest (rate limit)", note.title)
            return decision
        level = logging.INFO if event.severity in ("info", "resolved") else logging.WARNING
        alog.log(level, "%s: %s", note.title, event.summary)
        self._deliver(event.event_id, note, alog)
        return "sent"

    def _deliver(self, event_id: str, note: Notification, alog: ArtifactLogger) -> None:
        done = self.state.delivered_channels(event_id)
        failures = []
        for channel in self.channels:
            if channel.name in done:
                continue
            try:
                channel.send(note)
            except ChannelError as exc:
                failures.append(str(exc))
                self.state.count_failure(channel.name)
                continue
            self.state.mark_delivered(event_id, channel.name, self.clock())
            alog.info("delivered to %s", channel.name)
        if failures:
            raise ChannelError("; ".join(failures))
        self.state.finish(event_id)

    # -- the digest of held alerts ---------------------------------------------------
    def flush(self) -> int:
        """Deliver held alerts as one digest per channel when the rate limit allows.
        Returns how many held alerts were completed."""
        held = self.state.held()
        if not held:
            return 0
        now = self.clock()
        if not self.state.lease("flush", self.holder, now, FLUSH_LEASE_S):
            return 0
        try:
            if not self.state.take_slot(now, self.policy.max_per_minute):
                return 0
            alog = for_artifact(log, "alert/digest")
            for channel in self.channels:
                pending = [
                    e for e in held if channel.name not in self.state.delivered_channels(e.event_id)
                ]
                if not pending:
                    continue
                try:
                    channel.send(digest(pending, self.policy.max_per_minute))
                except ChannelError as exc:
                    self.state.count_failure(channel.name)
                    alog.error("digest of %d alert(s) not delivered: %s", len(pending), exc)
                    continue
                for e in pending:
                    self.state.mark_delivered(e.event_id, channel.name, now)
                alog.info("digest of %d alert(s) delivered to %s", len(pending), channel.name)
            names = {c.name for c in self.channels}
            complete = [
                e.event_id for e in held if names <= self.state.delivered_channels(e.event_id)
            ]
            self.state.drop_held(complete)
            return len(complete)
        finally:
            self.state.release("flush", self.holder)

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except PgvaultError as exc:
            log.warning("digest flush failed: %s", exc, extra={"artifact": "alert/digest"})

    def start_flusher(self, stop: threading.Event | None = None) -> threading.Thread:
        """Background digest delivery for the long-running worker (a daemon thread)."""
        stop = stop or threading.Event()

        def loop() -> None:
            while not stop.wait(FLUSH_INTERVAL_S):
                self.flush_quietly()

        thread = threading.Thread(target=loop, name="pgvault-alert-flush", daemon=True)
        thread.start()
        return thread
