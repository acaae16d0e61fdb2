"""Broker interface, topology and the RabbitMQ adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgvault.broker.auth import HMAC_HEADER, MessageAuth
from pgvault.broker.base import Ack, Broker, Dead, Delivery, Disposition, QueueDepth, Retry
from pgvault.broker.topology import STAGES, Topology

if TYPE_CHECKING:
    from pgvault.config import Settings


def topology_for(settings: Settings) -> Topology:
    return Topology(
        cluster=settings.cluster,
        retry_delays=tuple(settings.broker.retry_delays),
        delivery_limit=settings.broker.delivery_limit,
    )


def open_broker(settings: Settings) -> Broker:
    """The configured RabbitMQ broker (pika imported only here)."""
    from pgvault.broker.rabbit import RabbitBroker

    return RabbitBroker(
        settings.broker.url.get_secret_value(),
        topology_for(settings),
        heartbeat=settings.broker.heartbeat,
        connect_timeout=settings.broker.connect_timeout,
        call_timeout=settings.broker.call_timeout,
        prefetch=settings.broker.prefetch,
        auth=message_auth(settings),
    )


def message_auth(settings: Settings) -> MessageAuth:
    """Signs and verifies with the cluster's key file (read lazily, re-read on change)."""
    return MessageAuth(settings.cluster, settings.hmac_key_path)


__all__ = [
    "HMAC_HEADER",
    "STAGES",
    "Ack",
    "Broker",
    "Dead",
    "Delivery",
    "Disposition",
    "MessageAuth",
    "QueueDepth",
    "Retry",
    "Topology",
    "message_auth",
    "open_broker",
    "topology_for",
]
