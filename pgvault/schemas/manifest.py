"""manifest.json, the commit marker of a backup (schema version 2).

A producer writes `manifest.json` last, into the hidden work directory it then renames
into place: a backup directory without it is incomplete. When the host and its catalog
are gone, `catalog rebuild` believes what the manifest says, so every reader goes
through `parse_manifest`, which validates it and refuses what it does not understand
with a one-line `ManifestError`.

    {"manifest_version": 2, "kind": "logical",  ...}   LogicalManifest
    {"manifest_version": 2, "kind": "physical", ...}   PhysicalManifest

Version 1 manifests, still in stores, came in two shapes: logical ones carried
`"manifest_version": 1`, physical ones `"format": "pgvault-manifest/1"`. `upgrade_v1`
turns either into version 2 on read; nothing writes version 1 any more.

Evolution: a new optional field that an older reader may safely ignore (a
`DatabaseInfo` property, say) keeps the version; readers keep such fields they do not
know (extra="allow"), so they survive into the catalog's `meta`. A field a reader must
understand to restore correctly (tablespaces, an incremental's `parent`) bumps
MANIFEST_VERSION, so that an older pgvault refuses the manifest instead of restoring
half of the backup. Incremental base backups (PostgreSQL 17+) are therefore written as
version 3 (`backup_type`, `parent_id`, `chain`); full ones stay version 2, so older
pgvaults keep reading them and refuse only what they could not restore.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pgvault import dbname
from pgvault.errors import ManifestError

MANIFEST_VERSION: Final = 2
INCREMENTAL_MANIFEST_VERSION: Final = 3  # a reader must combine the chain to restore it
READABLE_VERSIONS: Final = (MANIFEST_VERSION, INCREMENTAL_MANIFEST_VERSION)
MANIFEST_NAME: Final = "manifest.json"
V1_PHYSICAL_FORMAT: Final = "pgvault-manifest/1"
BULKY_KEYS: Final = ("files", "tables")  # kept in manifest.json, not in events or meta

_SHA = r"^[0-9a-f]{64}$"


class _Part(BaseModel):
    """A nested part of a manifest: unknown fields kept, values frozen."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class ManifestFile(_Part):
    """One data file of the backup, with the producer's size and sha256 of its bytes."""

    name: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA)


class TableCount(_Part):
    """Rows of one table, counted in the dump's snapshot."""

    schema_name: str = Field(alias="schema")
    name: str
    rows: int = Field(ge=0)


class DatabaseInfo(_Part):
    """Properties of the dumped database that CREATE DATABASE can restore."""

    encoding: str | None = None
    collate: str | None = None
    ctype: str | None = None
    owner: str | None = None


class DumpCompression(_Part):
    method: str
    level: int


class BaseBackupCheck(_Part):
    """What the producer proved against PostgreSQL's backup_manifest before keeping it."""

    base_files_sha256_checked: int = Field(ge=0)
    wal_segments: list[str]
    pg_verifybackup: bool = False  # PostgreSQL 18+: its own tar-format check passed too


class TablesFile(_Part):
    """tables.json: a logical manifest's row counts, in a file of their own (encrypted)
    when encryption is on."""

    tables: list[TableCount]


class _Manifest(_Part):
    manifest_version: Literal[2, 3] = MANIFEST_VERSION
    backup_id: str = Field(min_length=1)
    started_at: str
    finished_at: str
    duration_s: float = Field(ge=0)
    files: list[ManifestFile] = Field(min_length=1)

    def file(self, name: str) -> ManifestFile | None:
        return next((f for f in self.files if f.name == name), None)

    def to_json(self) -> bytes:
        """The bytes a producer writes as manifest.json."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, indent=1).encode()

    def summary(self) -> dict[str, Any]:
        """The manifest without its bulky lists: the `meta` of events and catalog rows."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {k: v for k, v in data.items() if k not in BULKY_KEYS}


class LogicalManifest(_Manifest):
    """A pg_dump of one database (custom format) taken in an exported snapshot."""

    kind: Literal["logical"] = "logical"
    cluster: str
    db: str = Field(min_length=1)
    snapshot_at: str
    source: str
    server_version: str
    server_version_num: int
    pg_major: int | None = None  # the server's major version (14 .. 18)
    pg_dump_version: str
    snapshot: str
    format: Literal["custom"] = "custom"
    compression: DumpCompression
    database: DatabaseInfo = DatabaseInfo()
    # what CREATE / ALTER DATABASE restore: locale provider, ICU locale, comment,
    # connection limit, ACL, settings (pgvault.dbprops.DatabaseProperties)
    database_properties: dict[str, Any] | None = None
    dump_size: int = Field(ge=0)
    dump_sha256: str = Field(pattern=_SHA)
    table_count: int = Field(ge=0)
    row_count: int = Field(ge=0)
    tables: list[TableCount] | None = None  # in the manifest when not encrypted
    tables_file: str | None = None  # else the (encrypted) file that holds them

    @model_validator(mode="after")
    def _tables_somewhere(self) -> LogicalManifest:
        if self.manifest_version != MANIFEST_VERSION:
            raise ValueError(f"a logical manifest is version {MANIFEST_VERSION}")
        # both once a reader has loaded the tables file (`with_tables`)
        if self.tables is None and self.tables_file is None:
            raise ValueError("tables or tables_file is required")
        if self.tables_file is not None and self.file(self.tables_file) is None:
            raise ValueError(f"tables_file {self.tables_file} is not among its files")
        return self

    def with_tables(self, raw: bytes | str, where: str) -> LogicalManifest:
        """This manifest with the row counts read from its (decrypted) tables file."""
        try:
            tables = TablesFile.model_validate_json(raw).tables
        except ValidationError as exc:
            raise ManifestError(
                f"{where}: invalid {self.tables_file}: {_first_error(exc)}"
            ) from None
        return self.model_copy(update={"tables": tables})

    @property
    def artifact_name(self) -> str:
        """The artifact it commits: `<db>/<backup_id>`, the database name encoded as in
        spool paths and object keys (pgvault.dbname)."""
        return f"{dbname.encode(self.db)}/{self.backup_id}"

    @property
    def dump_name(self) -> str:
        """The dump's file name (`<db>.dump`): the one file that is not the tables file."""
        return next(f.name for f in self.files if f.name != self.tables_file)


class TablespaceInfo(_Part):
    """A tablespace the base backup holds, as `<oid>.tar.zst` beside base.tar.zst."""

    oid: int = Field(gt=0)
    name: str = Field(min_length=1)
    location: str
    file: str = Field(pattern=r"^[0-9]+\.tar\.zst$")


class DatabaseEntry(_Part):
    """A database of the backed-up cluster: which base/<oid> directory is which (a
    table or database restore extracts only the files it needs)."""

    oid: int = Field(gt=0)
    name: str = Field(min_length=1)
    template: bool = False


class PhysicalManifest(_Manifest):
    """A pg_basebackup (tar format, WAL streamed), verified against backup_manifest."""

    kind: Literal["physical"] = "physical"
    label: str
    timeline: int = Field(ge=1)
    start_lsn: int = Field(ge=0)
    end_lsn: int = Field(ge=0)
    start_lsn_text: str
    end_lsn_text: str
    start_wal: str
    stop_wal: str
    seg_size: int = Field(gt=0)
    system_identifier: str
    pg_version: str
    pg_version_num: int
    pg_major: int | None = None  # restores use the tools of this major version
    data_size: int = Field(ge=0)
    size: int = Field(ge=0)
    verification: BaseBackupCheck
    tablespaces: tuple[TablespaceInfo, ...] = ()  # restored under the target (invariant 11)
    # pg_database at the backup's start (oid, name); None in manifests from before it was
    # recorded: a partial restore (restore table/database) then extracts everything
    databases: tuple[DatabaseEntry, ...] | None = None
    # PostgreSQL 17+ incrementals: pg_basebackup --incremental against parent_id's
    # backup_manifest; chain = the backup ids a restore combines, full first, this last
    backup_type: Literal["full", "incremental"] = "full"
    parent_id: str | None = None
    chain: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _chain_consistent(self) -> PhysicalManifest:
        if self.backup_type == "full":
            if self.parent_id is not None or self.chain not in ((), (self.backup_id,)):
                raise ValueError("a full backup has no parent_id and no chain before itself")
            if self.manifest_version != MANIFEST_VERSION:
                raise ValueError(f"a full backup's manifest is version {MANIFEST_VERSION}")
            return self
        if self.manifest_version != INCREMENTAL_MANIFEST_VERSION:
            raise ValueError(
                f"an incremental backup's manifest is version {INCREMENTAL_MANIFEST_VERSION}"
            )
        chain = self.chain
        if (
            self.parent_id is None
            or len(chain) < 2
            or chain[-2:] != (self.parent_id, self.backup_id)
        ):
            raise ValueError("an incremental backup needs parent_id and chain [..., parent, self]")
        if len(set(chain)) != len(chain):
            raise ValueError("chain repeats a backup id")
        return self

    @property
    def artifact_name(self) -> str:
        """The artifact it commits: `<backup_id>`."""
        return self.backup_id

    @property
    def chain_ids(self) -> tuple[str, ...]:
        """The backups a restore of this one needs, full first (itself alone when full)."""
        return self.chain or (self.backup_id,)


Manifest = Annotated[LogicalManifest | PhysicalManifest, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[LogicalManifest | PhysicalManifest] = TypeAdapter(Manifest)


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest (either shape) as version 2; anything else unchanged."""
    if data.get("kind") == "logical" and data.get("manifest_version") == 1:
        return data | {"manifest_version": MANIFEST_VERSION}
    if (
        data.get("kind") == "physical"
        and data.get("format") == V1_PHYSICAL_FORMAT
        and "manifest_version" not in data
    ):
        rest = {k: v for k, v in data.items() if k != "format"}
        return rest | {"manifest_version": MANIFEST_VERSION}
    return data


def _version_problem(data: dict[str, Any]) -> str | None:
    version = data.get("manifest_version")
    if version is None:
        fmt = data.get("format")
        what = f"format {fmt!r}" if fmt not in (None, "custom") else "no manifest_version"
        return f"unknown manifest version ({what})"
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > INCREMENTAL_MANIFEST_VERSION
        hint = "; it was written by a newer pgvault, upgrade this one" if newer else ""
        return f"unknown manifest version {version!r} (this pgvault reads 1 to 3){hint}"
    return None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    if loc and loc[0] in ("logical", "physical"):
        loc = loc[1:]  # the union's tag: the kind is in the message's `where` already
    where = ".".join(str(p) for p in loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}" if where else f"{err['msg']}{more}"


def parse_manifest(
    raw: bytes | str | dict[str, Any], where: str
) -> LogicalManifest | PhysicalManifest:
    """Validate a manifest.json (version 2, or version 1 upgraded); `where` names it in
    the error (e.g. "physical/20240101T000000Z"). Raises ManifestError."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ManifestError(f"{where}: manifest.json is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: manifest.json is not a JSON object")
    data = upgrade_v1(data)
    problem = _version_problem(data)
    if problem is not None:
        raise ManifestError(f"{where}: {problem}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ManifestError(f"{where}: invalid manifest.json: {_first_error(exc)}") from None


def parse_artifact_manifest(
    raw: bytes | str, kind: str, name: str
) -> LogicalManifest | PhysicalManifest:
    """The manifest.json found at artifact `kind/name` (a spool directory, a store
    prefix): valid, and describing that very artifact. Raises ManifestError."""
    where = f"{kind}/{name}"
    manifest = parse_manifest(raw, where)
    if (manifest.kind, manifest.artifact_name) != (kind, name):
        raise ManifestError(
            f"{where}: its manifest.json describes {manifest.kind}/{manifest.artifact_name}"
        )
    return manifest


def parse_logical(raw: bytes | str | dict[str, Any], where: str) -> LogicalManifest:
    manifest = parse_manifest(raw, where)
    if not isinstance(manifest, LogicalManifest):
        raise ManifestError(f"{where}: expected a logical manifest, found {manifest.kind}")
    return manifest


def parse_physical(raw: bytes | str | dict[str, Any], where: str) -> PhysicalManifest:
    manifest = parse_manifest(raw, where)
    if not isinstance(manifest, PhysicalManifest):
        raise ManifestError(f"{where}: expected a physical manifest, found {manifest.kind}")
    return manifest


__all__ = [
    "BULKY_KEYS",
    "INCREMENTAL_MANIFEST_VERSION",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "BaseBackupCheck",
    "DatabaseEntry",
    "DatabaseInfo",
    "DumpCompression",
    "LogicalManifest",
    "Manifest",
    "ManifestFile",
    "PhysicalManifest",
    "TableCount",
    "TablesFile",
    "parse_artifact_manifest",
    "parse_logical",
    "parse_manifest",
    "parse_physical",
    "upgrade_v1",
]
