"""Catalog stage: `artifact.#` -> idempotent upserts into the SQLite catalog.

The catalog queue has a single active consumer, so one process writes pipeline events,
in order; the transaction commits (synchronous=FULL) before the message is acked.
"""

from __future__ import annotations

import logging

from pgvault.broker.base import Broker
from pgvault.catalog.artifacts import apply_event
from pgvault.catalog.db import CatalogDB
from pgvault.log import for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent

log = logging.getLogger(__name__)


class CatalogStage:
    name = "catalog"

    def __init__(self, catalog: CatalogDB, broker: Broker) -> None:
        self.catalog = catalog
        self.broker = broker

    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        if not isinstance(event, ArtifactEvent):
            return
        subject = f"{event.kind}/{event.name}"
        outcome = apply_event(self.catalog, event)
        alog = for_artifact(log, subject)
        if outcome.action == "conflict":
            alog.error("conflicting event ignored: %s", outcome.detail)
            self.broker.publish_event(
                AlertEvent(
                    cluster=self.catalog.cluster,
                    severity="critical",
                    check="catalog_conflict",
                    subject=subject,
                    summary=f"{subject}: event with a different sha256 ({outcome.detail})",
                    action="two producers may be writing the same artifact name; investigate",
                )
            )
        elif outcome.action == "ignored":
            alog.debug("%s event ignored (state is %s)", event.state, outcome.state)
        else:
            alog.info("%s -> %s", outcome.action, outcome.state)
