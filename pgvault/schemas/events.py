"""Pipeline events (schema version 1).

Routing keys: `artifact.<state>.<kind>` for ArtifactEvent and `alert.<severity>.<check>`
for AlertEvent, published to the topic exchange `pgvault.<cluster>.events`.

An artifact is identified by (cluster, kind, name): a WAL file name, "<db>/<backup_id>"
for a logical dump, "<backup_id>" for a base backup. Its files carry the producer's
sha256 (`sha256`, of the original bytes) and, once stored, the object key and the sha256
of the stored (compressed, maybe encrypted) bytes. Consumers must accept events of the
same major version with unknown extra fields ignored, so producers can add fields.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pgvault.errors import MessageError

SCHEMA_VERSION: Final = 1

ArtifactKind = Literal["wal", "history", "logical", "physical"]
ArtifactState = Literal["ready", "stored", "verified", "corrupt", "missing"]
Severity = Literal["info", "warning", "critical", "resolved"]
KINDS: tuple[str, ...] = ("wal", "history", "logical", "physical")

_SHA = r"^[0-9a-f]{64}$"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FileInfo(_Model):
    """One file of an artifact (a WAL artifact has exactly one)."""

    name: str  # relative to the artifact (e.g. "base.tar.zst"); the WAL name for WAL
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA)
    key: str | None = None  # object key, once stored
    stored_size: int | None = None
    stored_sha256: str | None = Field(None, pattern=_SHA)
    codec: Literal["zstd", "none"] | None = None
    encryption: Literal["age", "none"] | None = None


class ArtifactEvent(_Model):
    v: Literal[1] = SCHEMA_VERSION
    type: Literal["artifact"] = "artifact"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=utcnow)
    cluster: str
    kind: ArtifactKind
    state: ArtifactState
    name: str
    files: tuple[FileInfo, ...] = Field(min_length=1)
    meta: dict[str, Any] = {}
    reupload: bool = False  # ready event asking upload to replace a bad stored copy
    error: str | None = None  # corrupt/missing: what was wrong

    @property
    def routing_key(self) -> str:
        return f"artifact.{self.state}.{self.kind}"

    @property
    def sha256(self) -> str:
        """The artifact's identity checksum: its last file (WAL file, or manifest.json)."""
        return self.files[-1].sha256

    def evolve(self, **changes: Any) -> ArtifactEvent:
        """A new event (new id and time) about the same artifact."""
        data = self.model_dump()
        data.update(event_id=uuid.uuid4().hex, created_at=utcnow(), **changes)
        return ArtifactEvent.model_validate(data)


class AlertEvent(_Model):
    v: Literal[1] = SCHEMA_VERSION
    type: Literal["alert"] = "alert"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=utcnow)
    cluster: str
    severity: Severity
    check: str = Field(pattern=r"^[a-z0-9_]+$")
    subject: str = ""  # what it is about: a database, a WAL name, a queue
    summary: str
    value: str | None = None
    threshold: str | None = None
    action: str | None = None  # what the operator should do

    @property
    def routing_key(self) -> str:
        return f"alert.{self.severity}.{self.check}"

    @property
    def fingerprint(self) -> str:
        return f"{self.cluster}:{self.check}:{self.subject}"


Event = Annotated[ArtifactEvent | AlertEvent, Field(discriminator="type")]
_EVENT: TypeAdapter[ArtifactEvent | AlertEvent] = TypeAdapter(Event)


def parse_event(body: bytes) -> ArtifactEvent | AlertEvent:
    """Decode a message body; anything unparseable is a MessageError (dead-lettered)."""
    try:
        return _EVENT.validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        raise MessageError(f"malformed event: {loc}: {err['msg']}") from None
