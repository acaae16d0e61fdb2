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

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pgvault.errors import MessageError
from pgvault.ids import BACKUP_ID_RE
from pgvault.walfile import parse_name

SCHEMA_VERSION: Final = 1

ArtifactKind = Literal["wal", "history", "logical", "physical"]
ArtifactState = Literal["ready", "stored", "verified", "corrupt", "missing"]
Severity = Literal["info", "warning", "critical", "resolved"]
KINDS: tuple[str, ...] = ("wal", "history", "logical", "physical")

_SHA = r"^[0-9a-f]{64}$"


_CLUSTER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_identifier(value: str, what: str = "database name") -> str:
    """Any name PostgreSQL accepts: 1-63 bytes, no NUL. (Path safety is the job of the
    code that turns it into a path or key, not of this check.)"""
    if not value:
        raise ValueError(f"empty {what}")
    if "\0" in value:
        raise ValueError(f"{what} contains NUL")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"{what} longer than {MAX_IDENTIFIER_BYTES} bytes")
    return value


def check_component(value: str, what: str = "file name") -> str:
    """A single path component: non-empty, no '/', '\\' or NUL, not '.' or '..'."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise ValueError(f"{what} {value[:80]!r} is not a plain file name")
    if len(value.encode()) > 255:
        raise ValueError(f"{what} longer than 255 bytes")
    return value


def check_backup_id(value: str) -> str:
    if not BACKUP_ID_RE.match(value):
        raise ValueError(f"backup id {value[:80]!r} is not an id (YYYYMMDDTHHMMSSZ)")
    return value


def check_artifact_name(kind: str, name: str) -> str:
    """The name of an artifact of `kind` (see the module docstring), or ValueError."""
    if kind in ("wal", "history"):
        try:
            wal = parse_name(name)
        except ValueError:
            raise ValueError(f"{name[:80]!r} is not a WAL file name") from None
        if wal.kind != kind:
            raise ValueError(f"{name!r} is a {wal.kind} file name, not {kind}")
        return name
    if kind == "logical":
        db, sep, backup_id = name.rpartition("/")
        if not sep:
            raise ValueError(f"logical backup name {name[:80]!r} is not <database>/<backup_id>")
        check_identifier(db)
        check_backup_id(backup_id)
        return name
    return check_backup_id(name)


def check_key(value: str) -> str:
    """An object key: relative, '/'-separated, no empty, '.' or '..' component, no NUL."""
    parts = value.split("/")
    if "\0" in value or "\\" in value or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"object key {value[:120]!r} is not a plain relative key")
    return value


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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return check_component(value)

    @field_validator("key")
    @classmethod
    def _plain_key(cls, value: str | None) -> str | None:
        return None if value is None else check_key(value)


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

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not _CLUSTER.match(value):
            raise ValueError(f"cluster {value[:80]!r} is not a cluster name")
        return value

    @model_validator(mode="after")
    def _names(self) -> ArtifactEvent:
        """Names are validated at the schema boundary (invariant 12): a bad one never
        reaches a stage, the catalog or a path."""
        check_artifact_name(self.kind, self.name)
        if self.kind in ("wal", "history") and [f.name for f in self.files] != [self.name]:
            raise ValueError(f"a {self.kind} artifact has exactly one file, named {self.name}")
        db = self.meta.get("db")
        if db is not None:
            if not isinstance(db, str):
                raise ValueError("meta.db must be a string")
            check_identifier(db)
        backup_id = self.meta.get("backup_id")
        if backup_id is not None:
            if not isinstance(backup_id, str):
                raise ValueError("meta.backup_id must be a string")
            check_backup_id(backup_id)
        return self

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
