"""An in-memory twin of RabbitBroker for stage tests, the retry policy and the in-process
test harness (tests/harness.py).

Same interface, routing (topic bindings) and dispositions as RabbitBroker: publishing
before `declare()` is refused like an unroutable publish, a handler that raises is
retried like on RabbitMQ, and `take()` empties a queue for inspection. Delay queues are
not timed: a retried message waits in the named delay queue until `release_delayed()`
moves it back. Every publish is also appended to `published`, so tests can see what a
stage sent even after another stage consumed it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from pgvault.broker.auth import MessageAuth
from pgvault.broker.base import (
    Broker,
    ConsumeStats,
    Delivery,
    Disposition,
    Handler,
    QueueDepth,
    Retry,
    parking,
)
from pgvault.broker.topology import Topology, topic_matches
from pgvault.errors import BrokerError

log = logging.getLogger(__name__)


class StubBroker(Broker):
    def __init__(self, topology: Topology, auth: MessageAuth | None = None) -> None:
        super().__init__(topology, auth)
        self.queues: dict[str, deque[Delivery]] = {}
        self.published: list[Delivery] = []
        self.declared = False
        self.down = False  # set True to simulate an unreachable broker
        self._lock = threading.RLock()

    def declare(self) -> None:
        with self._lock:
            for spec in self.topology.all_queues():
                self.queues.setdefault(spec.name, deque())
            self.declared = True

    def delete_topology(self) -> None:
        with self._lock:
            self.queues.clear()
            self.declared = False

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        if self.down:
            raise BrokerError("stub broker is down")
        delivery = Delivery(body, routing_key, dict(headers or {}))
        with self._lock:
            targets = [
                spec.name
                for spec in self.topology.all_queues()
                if spec.name in self.queues
                and any(topic_matches(b, routing_key) for b in spec.bindings)
            ]
            if not targets:
                raise BrokerError(
                    f"no queue receives {routing_key!r} on {self.topology.exchange}; "
                    "run `pgvault init` to declare the topology"
                )
            for name in targets:
                self.queues[name].append(delivery)
            self.published.append(delivery)

    def consume(
        self,
        stage: str,
        handler: Handler,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
    ) -> ConsumeStats:
        stop = stop or threading.Event()
        stats = ConsumeStats()
        name = self.topology.queue(stage)
        if name not in self.queues:
            raise BrokerError(f"queue {name} does not exist; run `pgvault init`")
        queue = self.queues[name]
        while not stop.is_set():
            with self._lock:
                delivery = queue.popleft() if queue else None
            if delivery is None:
                if once:
                    break
                stop.wait(0.05)
                continue
            disposition = self._outcome(handler, delivery)
            stats.add(disposition)
            parked = parking(self.topology, stage, delivery, disposition)
            if parked is not None:
                target, headers = parked
                with self._lock:
                    self.queues.setdefault(target, deque()).append(
                        Delivery(delivery.body, delivery.routing_key, headers)
                    )
        return stats

    @staticmethod
    def _outcome(handler: Handler, delivery: Delivery) -> Disposition:
        try:
            return handler(delivery)
        except Exception as exc:  # as RabbitBroker: never lose the message
            log.exception("handler raised instead of returning a disposition")
            return Retry(0, f"handler crashed: {exc!r}")

    def take(self, queue: str, limit: int = 100) -> list[Delivery]:
        """Remove and return up to `limit` messages from a queue (tests and triage)."""
        out: list[Delivery] = []
        with self._lock:
            q = self.queues.get(queue, deque())
            while q and len(out) < limit:
                out.append(q.popleft())
        return out

    def redeliver(self, stage: str, deliveries: list[Delivery]) -> None:
        """Put messages back on a stage's work queue flagged as redelivered, as RabbitMQ
        does with unacked messages of a consumer that died."""
        with self._lock:
            queue = self.queues[self.topology.queue(stage)]
            for d in deliveries:
                queue.append(Delivery(d.body, d.routing_key, dict(d.headers), redelivered=True))

    def delayed(self, stage: str) -> int:
        """How many of a stage's messages wait in its delay queues."""
        with self._lock:
            return sum(
                len(self.queues.get(self.topology.retry_queue(stage, delay), ()))
                for delay in self.topology.retry_delays
            )

    def release_delayed(self, stage: str) -> int:
        """Move every parked message of a stage back to its work queue."""
        moved = 0
        with self._lock:
            for delay in self.topology.retry_delays:
                parked = self.queues.get(self.topology.retry_queue(stage, delay), deque())
                while parked:
                    self.queues[self.topology.queue(stage)].append(parked.popleft())
                    moved += 1
        return moved

    def queue_depths(self) -> list[QueueDepth]:
        with self._lock:
            return [QueueDepth(name, len(q), 0) for name, q in self.queues.items()]
