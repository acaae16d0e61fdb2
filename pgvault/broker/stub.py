"""An in-memory twin of RabbitBroker for unit tests of stages and the retry policy.

Same routing (topic bindings), same dispositions; delay queues are not timed: a retried
message goes to the named delay queue and `release_delayed()` moves it back.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from pgvault.broker.auth import MessageAuth
from pgvault.broker.base import (
    Broker,
    ConsumeStats,
    Delivery,
    Handler,
    QueueDepth,
    parking,
)
from pgvault.broker.topology import Topology, topic_matches
from pgvault.errors import BrokerError


class StubBroker(Broker):
    def __init__(self, topology: Topology, auth: MessageAuth | None = None) -> None:
        super().__init__(topology, auth)
        self.queues: dict[str, deque[Delivery]] = {}
        self.declared = False
        self.down = False  # set True to simulate an unreachable broker
        self._lock = threading.Lock()

    def declare(self) -> None:
        for spec in self.topology.all_queues():
            self.queues.setdefault(spec.name, deque())
        self.declared = True

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        if self.down:
            raise BrokerError("stub broker is down")
        routed = False
        with self._lock:
            for spec in self.topology.all_queues():
                if any(topic_matches(b, routing_key) for b in spec.bindings):
                    self.queues[spec.name].append(Delivery(body, routing_key, dict(headers or {})))
                    routed = True
        if not routed:
            raise BrokerError(f"no queue receives {routing_key!r}; run `pgvault init`")

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
        queue = self.queues[self.topology.queue(stage)]
        while not stop.is_set():
            with self._lock:
                delivery = queue.popleft() if queue else None
            if delivery is None:
                if once:
                    break
                stop.wait(0.05)
                continue
            disposition = handler(delivery)
            stats.add(disposition)
            parked = parking(self.topology, stage, delivery, disposition)
            if parked is not None:
                name, headers = parked
                self.queues.setdefault(name, deque()).append(
                    Delivery(delivery.body, delivery.routing_key, headers)
                )
        return stats

    def release_delayed(self, stage: str) -> int:
        """Move every parked message of a stage back to its work queue."""
        moved = 0
        for delay in self.topology.retry_delays:
            parked = self.queues.get(self.topology.retry_queue(stage, delay), deque())
            while parked:
                self.queues[self.topology.queue(stage)].append(parked.popleft())
                moved += 1
        return moved

    def queue_depths(self) -> list[QueueDepth]:
        return [QueueDepth(name, len(q), 0) for name, q in self.queues.items()]
