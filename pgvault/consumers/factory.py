"""Building a stage with its dependencies from the settings (used by the CLI)."""

from __future__ import annotations

from pgvault.broker.base import Broker
from pgvault.config import Settings
from pgvault.consumers.worker import Stage
from pgvault.keys import identities_for


def build_stage(stage: str, settings: Settings, broker: Broker) -> Stage:
    from pgvault.storage import open_store

    if stage == "upload":
        from pgvault.consumers.upload import UploadStage

        return UploadStage(settings, open_store(settings.storage), broker)
    if stage == "verify":
        from pgvault.consumers.verify import VerifyStage

        return VerifyStage(settings, open_store(settings.storage), broker, identities_for(settings))
    if stage == "catalog":
        from pgvault.catalog import open_catalog
        from pgvault.consumers.catalog import CatalogStage

        return CatalogStage(open_catalog(settings), broker)
    if stage == "alert":
        from pgvault.consumers.alert import AlertStage

        alert_stage = AlertStage.from_settings(settings)
        alert_stage.start_flusher()
        return alert_stage
    raise ValueError(f"unknown stage {stage!r}")
