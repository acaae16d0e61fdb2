"""Versioned wire models: the only thing pipeline stages share."""

from pgvault.schemas.events import (
    SCHEMA_VERSION,
    AlertEvent,
    ArtifactEvent,
    ArtifactKind,
    ArtifactState,
    Event,
    FileInfo,
    Severity,
    parse_event,
)

__all__ = [
    "SCHEMA_VERSION",
    "AlertEvent",
    "ArtifactEvent",
    "ArtifactKind",
    "ArtifactState",
    "Event",
    "FileInfo",
    "Severity",
    "parse_event",
]
