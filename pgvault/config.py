"""The configuration model: one TOML file plus PGVAULT_* environment overrides.

Loaded once by the CLI (`load_settings`) and passed down; no module reads the
environment or the file on its own (except the stdlib-only archive path, see
pgvault.lightconf, which reads the same keys the same way).

Precedence: PGVAULT_<SECTION>__<KEY> environment variables, then the TOML file, then the
defaults below. Secrets (broker URL password, webhook URL, SMTP password) are SecretStr
and never printed; store credentials come from the AWS environment or profile only.
"""

from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pgvault.errors import ConfigError
from pgvault.lightconf import (
    DEFAULT_CATALOG_PATH,
    DEFAULT_CLUSTER,
    DEFAULT_SPOOL_DIR,
    config_path,
    read_toml,
)

_CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresSettings(_Section):
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "postgres"
    dbname: str = "postgres"  # maintenance database used for checks and CREATE DATABASE
    databases: list[str] = []
    bin_dir: str = ""
    archive_timeout: int = Field(300, ge=0)  # seconds; what `check` expects of the server
    sanity_query: str = "SELECT 1"  # drills run this against the restored cluster
    # pg_dump --compress level for logical backups: 0 = none, 1-9 = gzip level with
    # pg_dump 15, zstd level with pg_dump >= 16 (pg_dump's own default is gzip 6)
    dump_compression: int = Field(6, ge=0, le=9)

    def bin(self, tool: str) -> str:
        return str(Path(self.bin_dir) / tool) if self.bin_dir else tool


class BrokerSettings(_Section):
    url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/%2F")
    prefetch: int = Field(1, ge=1, le=100)
    retry_delays: list[int] = [5, 30, 120, 600]  # seconds; one delay queue per step
    heartbeat: int = Field(60, ge=0)
    connect_timeout: float = Field(10.0, gt=0)
    delivery_limit: int = Field(20, ge=1)  # broker-side cap on redeliveries (crash loops)
    # every broker call (connect, declare, publish confirm) gives up after this long, so a
    # broker that accepts TCP but never answers cannot hang check/doctor/init
    call_timeout: float = Field(15.0, gt=0)
    # message authentication key (HMAC-SHA256, mode 0600); default: beside the catalog
    hmac_key_file: Path | None = None

    @field_validator("retry_delays")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value) or len(set(value)) != len(value):
            raise ValueError("retry_delays must be distinct positive seconds")
        return sorted(value)


class StorageSettings(_Section):
    type: Literal["local", "s3"] = "local"
    path: Path = Path("/backup/store")
    endpoint_url: str = ""
    bucket: str = "cs-backups"
    prefix: str = "postgres"
    region: str = "auto"
    path_style: bool = False
    profile: str = ""
    part_size_mb: int = Field(64, ge=5, le=5120)  # fixed multipart part size (R2: equal parts)
    max_concurrency: int = Field(4, ge=1, le=64)
    compression_level: int = Field(3, ge=1, le=19)
    # s3: every call gives up instead of hanging on a store that stops answering
    connect_timeout: float = Field(10.0, gt=0)  # seconds to open a connection
    read_timeout: float = Field(60.0, gt=0)  # seconds without a byte from the store
    max_attempts: int = Field(3, ge=1, le=10)  # tries per call (botocore "standard" retries)

    @field_validator("prefix")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip("/")


class RetentionSettings(_Section):
    logical_days: int = Field(30, ge=1)
    physical_weeks: int = Field(4, ge=1)
    wal_days: int = Field(7, ge=1)
    local_keep_days: float = Field(2, ge=0)


class AlertSettings(_Section):
    discord_webhook_url: SecretStr = SecretStr("")
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_ssl: bool = False  # implicit TLS from the first byte (port 465); overrides starttls
    email_from: str = ""
    email_to: list[str] = []
    max_backup_age_hours: float = 25
    max_physical_age_hours: float = 7 * 24 + 12
    size_change_pct: float = 20
    max_duration_minutes: float = 60
    disk_usage_pct: float = 80
    max_drill_age_days: float = 8
    renotify_minutes: float = 240
    max_per_minute: int = Field(20, ge=1)
    # monitoring (`pgvault check`); an age/duration/size threshold of 0 disables its check
    max_upload_lag_minutes: float = Field(60, ge=0)
    # WAL upload lag (a spool segment, or a segment PostgreSQL archived, not verified yet):
    # a warning, then critical; well under the backup thresholds (0 disables each)
    wal_lag_warning_minutes: float = Field(5, ge=0)
    wal_lag_critical_minutes: float = Field(15, ge=0)
    max_queue_depth: int = Field(1000, ge=1)
    max_archive_pending: int = Field(10, ge=1)  # completed WAL segments not yet archived
    disk_critical_pct: float = Field(95, gt=0, le=100)
    state_path: Path | None = None  # alert dedupe state; default: next to the catalog
    # `check` delivers critical alerts itself when the broker is down, and also when the
    # alert queue has no consumer (no alert worker running) unless this is false
    direct_if_no_consumer: bool = True


class AuditSettings(_Section):
    """The scheduled store audit (`pgvault catalog audit`, catalog/audit.py)."""

    # rolling read-back: bytes of stored objects re-proved per run (at least one object)
    read_bytes_per_run: int = Field(8 * 1024**3, ge=1)
    # every retained object is read back once per cycle; a new cycle starts this many days
    # after the previous one started
    cycle_days: float = Field(7, gt=0)
    workers: int = Field(4, ge=1, le=64)
    # `check` store_audit: WARNING when the last complete listing / read-back cycle is
    # older than this (0 disables); CRITICAL at twice the age
    max_listing_age_hours: float = Field(36, ge=0)
    max_cycle_age_days: float = Field(14, ge=0)


class EncryptionSettings(_Section):
    recipients: list[str] = []
    identity_file: str = ""  # or PGVAULT_AGE_IDENTITY (see load_settings)

    @field_validator("recipients")
    @classmethod
    def _age_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key.startswith("age1"):
                raise ValueError(f"{key[:12]}... is not an age recipient (age1...)")
        return value


class ServiceSettings(_Section):
    # the one OS user everything pgvault writes belongs to (DESIGN invariant 14): commands
    # started as root switch to it (pgvault.identity); restores and drills keep root
    user: str = "postgres"
    # the upload worker's scratch space (compression, encryption); outside the spool so a
    # full spool can still drain. Default: /var/tmp/pgvault-<cluster>
    work_dir: Path | None = None
    # `check`: a spool entry older than this that the catalog does not show stored or
    # verified is an alert (not announced, or not uploaded); 0 disables
    max_unshipped_minutes: float = Field(10, ge=0)


ENV_PREFIX = "PGVAULT_"
ENV_NESTED = "__"


class SettingsError(ValueError):
    """A PGVAULT_* environment value that cannot be read (e.g. a list that is not JSON)."""


def _complex(annotation: Any) -> bool:
    """Values of this type come from the environment as JSON (lists, dicts, sections)."""
    origin = typing.get_origin(annotation)
    if origin in (list, dict, set, tuple):
        return True
    if origin is not None:  # X | None and the like: complex if any member is
        return any(_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _env_value(name: str, annotation: Any, raw: str) -> Any:
    if not _complex(annotation):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise SettingsError(
            f'error parsing value for field "{name}" from the environment'
        ) from None


def _deep_update(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def environment_overrides(model: type[BaseModel]) -> dict[str, Any]:
    """PGVAULT_<FIELD> and PGVAULT_<SECTION>__<KEY> (names case-insensitive), values as
    strings for pydantic to convert, JSON for lists, dicts and whole sections."""
    out: dict[str, Any] = {}
    fields = model.model_fields
    for env_name, raw in os.environ.items():
        if not env_name.upper().startswith(ENV_PREFIX):
            continue
        name, nested, sub = env_name[len(ENV_PREFIX) :].lower().partition(ENV_NESTED)
        field = fields.get(name)
        if field is None or field.exclude:
            continue
        if not nested:
            value = _env_value(name, field.annotation, raw)
            if isinstance(value, dict) and isinstance(out.get(name), dict):
                value = _deep_update(value, out[name])  # SECTION__KEY beats SECTION
            out[name] = value
            continue
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        sub_field = section.model_fields.get(sub)
        value = _env_value(f"{name}.{sub}", sub_field.annotation if sub_field else str, raw)
        target = out.setdefault(name, {})
        if isinstance(target, dict):
            target[sub] = value
    return out


class Settings(BaseModel):
    """The whole configuration. Built from keyword values (the TOML file's), with the
    PGVAULT_* environment overriding them (`environment_overrides`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def __init__(self, **data: Any) -> None:
        super().__init__(**_deep_update(data, environment_overrides(type(self))))

    cluster: str = DEFAULT_CLUSTER
    spool_dir: Path = Path(DEFAULT_SPOOL_DIR)
    catalog_path: Path = Path(DEFAULT_CATALOG_PATH)
    postgres: PostgresSettings = PostgresSettings()
    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    retention: RetentionSettings = RetentionSettings()
    alerts: AlertSettings = AlertSettings()
    audit: AuditSettings = AuditSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    service: ServiceSettings = ServiceSettings()

    config_file: Path | None = Field(None, exclude=True)

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        if not _CLUSTER_RE.match(value):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (it names queues)")
        return value

    @property
    def alert_state_path(self) -> Path:
        """The alert workers' shared dedupe state (SQLite), next to the catalog by default."""
        if self.alerts.state_path is not None:
            return self.alerts.state_path
        return self.catalog_path.with_name(f"{self.catalog_path.stem}.alerts.sqlite")

    @property
    def work_dir(self) -> Path:
        """The upload worker's scratch directory, outside the spool (`[service] work_dir`)."""
        if self.service.work_dir is not None:
            return self.service.work_dir
        return Path("/var/tmp") / f"pgvault-{self.cluster}"  # noqa: S108 (0700, owner checked)

    @property
    def hmac_key_path(self) -> Path:
        """The cluster's message key (pgvault.broker.auth): `[broker] hmac_key_file`, by
        default `pgvault-<cluster>.hmac.json` beside the catalog."""
        if self.broker.hmac_key_file is not None:
            return self.broker.hmac_key_file
        return self.catalog_path.parent / f"pgvault-{self.cluster}.hmac.json"

    def redacted(self) -> dict[str, Any]:
        """The effective config for `config show`: secrets masked."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["broker"]["url"] = redact_url(self.broker.url.get_secret_value())
        data["alerts"]["discord_webhook_url"] = (
            "********" if self.alerts.discord_webhook_url.get_secret_value() else ""
        )
        data["alerts"]["smtp_password"] = (
            "********" if self.alerts.smtp_password.get_secret_value() else ""
        )
        return data


def redact_url(url: str) -> str:
    """amqp://user:secret@host/vhost -> amqp://user:****@host/vhost (the password may
    itself contain '@' or ':'; everything up to the last '@' of the authority goes)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    masked = f"{user}:****" if ":" in userinfo else user
    return f"{scheme}://{masked}@{host}{slash}{path}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _format_error(exc: ValidationError, path: Path) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config {path}: {key}: {err['msg']}{more}"


def load_settings(explicit: str | Path | None = None) -> Settings:
    """Load the config once; a bad or missing file is a one-line ConfigError."""
    path = Path(config_path(str(explicit) if explicit else None))
    data = read_toml(path)
    try:
        settings = Settings(**cast(dict[str, Any], data))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, path)) from None
    except (SettingsError, ValueError) as exc:  # e.g. a PGVAULT_* value that is not JSON
        raise ConfigError(f"config {path}: environment: {_first_line(exc)}") from None
    settings.config_file = path
    identity = os.environ.get("PGVAULT_AGE_IDENTITY")
    if identity and not settings.encryption.identity_file:
        settings.encryption.identity_file = identity
    return settings


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Build settings without a file (tests, `init --print-example`)."""
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, Path("<dict>"))) from None
    except (SettingsError, ValueError) as exc:
        raise ConfigError(f"config: environment: {_first_line(exc)}") from None
