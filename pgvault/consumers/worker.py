"""The shared worker loop: parse, dispatch to a stage, apply the retry policy.

Retries are policy, not stage code (dramatiq's idea): a stage raises a PgvaultError;
transient ones (broker, store, catalog busy) are retried after the configured delays,
permanent ones (checksum conflicts, undecodable messages) go straight to the stage's
dead-letter queue. Either way, a dead letter raises an alert and the worker goes on.

Before anything else a message must carry a valid HMAC of this cluster's key
(pgvault.broker.auth) and parse with valid names (pgvault.schemas): a message that fails
either is refused without retries (invariant 12). Exceptions that say the message itself
is bad (validation, ValueError, TypeError, ...) are permanent too: retrying the same bytes
cannot help. Only unexpected errors are retried as crashes, a bounded number of times.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Protocol

from pydantic import ValidationError

from pgvault.broker.base import Ack, Broker, ConsumeStats, Dead, Delivery, Disposition, Retry
from pgvault.errors import MessageAuthError, MessageError, PgvaultError
from pgvault.log import for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent, parse_event

log = logging.getLogger(__name__)

# raised by a stage for a message it can never act on (bad names/values, bad shapes):
# dead-lettered at once instead of being retried as a crash for minutes
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ValidationError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    UnicodeError,
)


class Stage(Protocol):
    name: str

    def handle(self, event: ArtifactEvent | AlertEvent) -> None: ...


def _subject(event: ArtifactEvent | AlertEvent | None) -> str:
    if isinstance(event, ArtifactEvent):
        return f"{event.kind}/{event.name}"
    if isinstance(event, AlertEvent):
        return f"alert/{event.check}"
    return "-"


class Worker:
    def __init__(self, stage: Stage, broker: Broker, cluster: str) -> None:
        self.stage = stage
        self.broker = broker
        self.cluster = cluster

    def on_delivery(self, delivery: Delivery) -> Disposition:
        event: ArtifactEvent | AlertEvent | None = None
        try:
            self.broker.auth.verify(delivery.body, delivery.headers)
            event = parse_event(delivery.body)
            if event.cluster != self.cluster:
                raise MessageError(f"event for cluster {event.cluster!r} on {self.cluster!r} queue")
            self.stage.handle(event)
            return Ack()
        except PgvaultError as exc:
            return self._failed(delivery, event, exc, transient=exc.transient)
        except PERMANENT_ERRORS as exc:  # the message cannot be acted on, now or later
            reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            for_artifact(log, _subject(event)).debug("traceback", exc_info=True)
            return self._failed(
                delivery, event, MessageError(f"unusable message: {reason}"), transient=False
            )
        except Exception as exc:  # a bug: log it fully, retry a bounded number of times
            alog = for_artifact(log, _subject(event))
            alog.error(
                "stage %s crashed: %s",
                self.stage.name,
                "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            )
            alog.debug("traceback", exc_info=True)
            return self._failed(delivery, event, exc, transient=True)

    def _failed(
        self,
        delivery: Delivery,
        event: ArtifactEvent | AlertEvent | None,
        exc: Exception,
        *,
        transient: bool,
    ) -> Disposition:
        subject = _subject(event)
        alog = for_artifact(log, subject)
        reason = str(exc) or type(exc).__name__
        delay = self.broker.topology.retry_delay(delivery.attempt) if transient else None
        if delay is not None:
            alog.warning(
                "stage %s: attempt %d failed (%s); retrying in %ds",
                self.stage.name,
                delivery.attempt + 1,
                reason,
                delay,
            )
            return Retry(delay, reason)
        alog.error(
            "stage %s: giving up (%s); message moved to the dead-letter queue",
            self.stage.name,
            reason,
        )
        if self.stage.name != "alert":  # the alert stage's own failures would loop
            self._alert_dead_letter(
                subject, reason, delivery.attempt, refused=isinstance(exc, MessageAuthError)
            )
        return Dead(reason)

    def _alert_dead_letter(
        self, subject: str, reason: str, attempts: int, *, refused: bool = False
    ) -> None:
        queue = self.broker.topology.dead_queue(self.stage.name)
        if refused:
            summary = (
                f"{self.stage.name} stage refused a message that is not authenticated by "
                f"this cluster's key ({reason}); it was not applied"
            )
            action = (
                f"inspect queue {queue}: something that is not a pgvault stage of this cluster "
                "(another host, a stale key, an attacker with broker credentials) published it"
            )
        else:
            summary = (
                f"{self.stage.name} stage gave up on {subject} after {attempts + 1} "
                f"attempt(s): {reason}"
            )
            action = f"inspect queue {queue}; fix the cause, then requeue or discard the message"
        alert = AlertEvent(
            cluster=self.cluster,
            severity="critical",
            check="message_refused" if refused else "dead_letter",
            subject=f"{self.stage.name}:{subject}",
            summary=summary,
            action=action,
        )
        try:
            self.broker.publish_event(alert)
        except PgvaultError as exc:
            for_artifact(log, subject).error("could not publish dead-letter alert: %s", exc)

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> ConsumeStats:
        self.broker.auth.ring()  # no message key: refuse to start (MessageKeyError)
        return self.broker.consume(self.stage.name, self.on_delivery, once=once, stop=stop)
