"""The broker interface the pipeline is written against, dramatiq-style.

A worker hands `consume` a callback that turns a Delivery into a Disposition; the broker
carries it out *after* the callback returned, i.e. after the side effect is durable:
Ack, Retry (park the message in a delay queue, then ack) or Dead (copy to the stage's
dead-letter queue, then ack). Two implementations: RabbitBroker (pika) and StubBroker
(in memory, for unit tests of stage logic and the retry policy).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgvault.broker.auth import MessageAuth
from pgvault.broker.topology import ATTEMPT_HEADER, ERROR_HEADER, STAGE_HEADER, Topology
from pgvault.errors import BrokerError
from pgvault.schemas import AlertEvent, ArtifactEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    body: bytes
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False

    @property
    def attempt(self) -> int:
        """How many times this message already failed (0 on first delivery)."""
        try:
            return int(self.headers.get(ATTEMPT_HEADER, 0))
        except (TypeError, ValueError):
            return 0


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Retry:
    delay: int
    reason: str


@dataclass(frozen=True)
class Dead:
    reason: str


Disposition = Ack | Retry | Dead
Handler = Callable[[Delivery], Disposition]


def parking(
    topology: Topology, stage: str, delivery: Delivery, disposition: Disposition
) -> tuple[str, dict[str, Any]] | None:
    """Where a Retry or Dead disposition puts the message (queue name) and the headers it
    carries there; None for Ack. Shared by every broker so they park messages alike."""
    headers = dict(delivery.headers)
    if isinstance(disposition, Retry):
        delay = disposition.delay
        if delay not in topology.retry_delays:
            delay = topology.retry_delays[0]
        headers.update(
            {ATTEMPT_HEADER: delivery.attempt + 1, ERROR_HEADER: disposition.reason[:500]}
        )
        return topology.retry_queue(stage, delay), headers
    if isinstance(disposition, Dead):
        headers.update(
            {
                ERROR_HEADER: disposition.reason[:500],
                STAGE_HEADER: stage,
                "x-pgvault-routing-key": delivery.routing_key,
            }
        )
        return topology.dead_queue(stage), headers
    return None


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int
    consumers: int


@dataclass
class ConsumeStats:
    acked: int = 0
    retried: int = 0
    dead: int = 0

    def add(self, disposition: Disposition) -> None:
        if isinstance(disposition, Ack):
            self.acked += 1
        elif isinstance(disposition, Retry):
            self.retried += 1
        else:
            self.dead += 1


class Broker(ABC):
    def __init__(self, topology: Topology, auth: MessageAuth | None = None) -> None:
        self.topology = topology
        # without a key file (tests, tools) publishers and consumers of this one object
        # share a random key; open_broker() always passes the cluster's key file
        self.auth = auth or MessageAuth.ephemeral(topology.cluster)

    @abstractmethod
    def declare(self) -> None:
        """Declare exchange, queues and bindings; idempotent."""

    @abstractmethod
    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        """Persistent publish to the events exchange, returning only once confirmed."""

    def publish_event(self, event: ArtifactEvent | AlertEvent) -> None:
        """Publish an event signed with the cluster's message key (x-pgvault-hmac)."""
        body = event.model_dump_json().encode()
        self.publish(event.routing_key, body, self.auth.sign(body))

    @abstractmethod
    def consume(
        self,
        stage: str,
        handler: Handler,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
    ) -> ConsumeStats:
        """Run the stage's consumer until `stop` is set (or, with once, until drained)."""

    @abstractmethod
    def queue_depths(self) -> list[QueueDepth]:
        """Depth and consumers of every queue of this cluster (absent queues skipped)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def declare_until_up(
    broker: Broker, stop: threading.Event, what: str, max_delay: float = 30.0
) -> bool:
    """Declare the topology, retrying with backoff while the broker is unreachable (one
    log line when it goes down, one when it is back). False when stopped first."""
    delay = 1.0
    down = False
    while not stop.is_set():
        try:
            broker.declare()
        except BrokerError as exc:
            if not down:
                log.warning("%s: %s; retrying with backoff (up to %.0fs)", what, exc, max_delay)
                down = True
            stop.wait(delay)
            delay = min(delay * 2, max_delay)
            continue
        if down:
            log.info("%s: broker reachable again", what)
        return True
    return False
