"""Exchange and queue names, arguments and bindings (no pika here).

Everything carries the cluster name, so clusters and parallel test runs can share a
broker. Per stage:

    pgvault.<c>.<stage>               quorum work queue, bound to the events exchange
    pgvault.<c>.<stage>.retry.<N>s    delay queue: messages wait N s, then dead-letter
                                      back into the work queue (survives restarts)
    pgvault.<c>.<stage>.dead          dead-letter queue: parse failures, exhausted retries,
                                      and the broker's own delivery-limit (crash loops)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGE_BINDINGS: dict[str, tuple[str, ...]] = {
    "upload": ("artifact.ready.#",),
    "verify": ("artifact.stored.#",),
    "catalog": ("artifact.#",),
    "alert": ("alert.#",),
}
STAGES: tuple[str, ...] = tuple(STAGE_BINDINGS)
ATTEMPT_HEADER = "x-pgvault-attempt"
ERROR_HEADER = "x-pgvault-error"
STAGE_HEADER = "x-pgvault-stage"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[str, ...] = ()
    durable: bool = True


@dataclass(frozen=True)
class Topology:
    cluster: str
    retry_delays: tuple[int, ...] = (5, 30, 120, 600)
    delivery_limit: int = 20
    stages: tuple[str, ...] = field(default=STAGES)

    @property
    def exchange(self) -> str:
        return f"pgvault.{self.cluster}.events"

    def queue(self, stage: str) -> str:
        if stage not in STAGE_BINDINGS:
            raise ValueError(f"unknown stage {stage!r} (expected one of {', '.join(STAGES)})")
        return f"pgvault.{self.cluster}.{stage}"

    def retry_queue(self, stage: str, delay: int) -> str:
        return f"{self.queue(stage)}.retry.{delay}s"

    def dead_queue(self, stage: str) -> str:
        return f"{self.queue(stage)}.dead"

    def retry_delay(self, attempt: int) -> int | None:
        """Delay before attempt number `attempt + 1`, None when retries are exhausted."""
        return self.retry_delays[attempt] if attempt < len(self.retry_delays) else None

    def stage_queues(self, stage: str) -> list[QueueSpec]:
        work_args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_queue(stage),
        }
        if stage == "catalog":
            work_args["x-single-active-consumer"] = True  # one SQLite writer, in order
        specs = [QueueSpec(self.queue(stage), work_args, STAGE_BINDINGS[stage])]
        for delay in self.retry_delays:
            specs.append(
                QueueSpec(
                    self.retry_queue(stage, delay),
                    {
                        "x-queue-type": "classic",
                        "x-message-ttl": delay * 1000,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self.queue(stage),
                    },
                )
            )
        specs.append(QueueSpec(self.dead_queue(stage), {"x-queue-type": "quorum"}))
        return specs

    def all_queues(self) -> list[QueueSpec]:
        return [spec for stage in self.stages for spec in self.stage_queues(stage)]

    def definitions(self, vhost: str = "/") -> dict[str, Any]:
        """RabbitMQ definitions for `rabbitmqctl import_definitions` (deploy/)."""
        queues = self.all_queues()
        return {
            "exchanges": [
                {
                    "name": self.exchange,
                    "vhost": vhost,
                    "type": "topic",
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
            ],
            "queues": [
                {
                    "name": q.name,
                    "vhost": vhost,
                    "durable": q.durable,
                    "auto_delete": False,
                    "arguments": q.arguments,
                }
                for q in queues
            ],
            "bindings": [
                {
                    "source": self.exchange,
                    "vhost": vhost,
                    "destination": q.name,
                    "destination_type": "queue",
                    "routing_key": key,
                    "arguments": {},
                }
                for q in queues
                for key in q.bindings
            ],
        }


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching ('*' one word, '#' zero or more), for the stub broker."""
    pat = pattern.split(".")
    words = key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(words)
        if pat[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(words) + 1))
        if j == len(words):
            return False
        return (pat[i] == "*" or pat[i] == words[j]) and match(i + 1, j + 1)

    return match(0, 0)
