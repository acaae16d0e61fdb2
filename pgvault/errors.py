"""The one error hierarchy of pgvault.

Stdlib only: `wal-archive` imports it on the hot path. Adapters (broker, storage, pg,
catalog) translate library exceptions into these at their boundary, so callers never see
pika, botocore or psycopg exceptions. Every message is one line and carries no secret.
"""

from __future__ import annotations


class PgvaultError(Exception):
    """Base class. `exit_code` is what the CLI exits with; `transient` tells a worker
    whether retrying later can help (a broker outage) or not (a checksum conflict)."""

    exit_code = 1
    transient = False

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split())  # always a single line


class UsageError(PgvaultError):
    """Bad arguments or input: exit 2, like a shell tool."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file or environment is unusable; the message names the key."""

    transient = False


class ArchiveError(PgvaultError):
    """wal-archive could not put a file durably into the spool."""


class ArchiveConflict(ArchiveError):
    """Same WAL name, different content: never overwritten."""


class SpoolError(PgvaultError):
    """The spool cannot be read or written (permissions, disk full)."""


class BrokerError(PgvaultError):
    """RabbitMQ unreachable or refused an operation."""

    transient = True


class MessageError(PgvaultError):
    """A message that cannot be parsed: it goes straight to the dead-letter queue."""


class MessageAuthError(MessageError):
    """A message without a valid HMAC of this cluster's key: refused, dead-lettered."""


class MessageKeyError(PgvaultError):
    """The message key file is missing, unreadable or not this cluster's."""


class StoreError(PgvaultError):
    """The object store failed; usually worth retrying."""

    transient = True


class StoreUnavailable(StoreError):
    """Endpoint unreachable or credentials refused."""


class ObjectMissing(StoreError):
    """The object is not in the store."""

    transient = False


class ObjectConflict(StoreError):
    """An object exists with different content; pgvault never overwrites it."""

    transient = False


class IntegrityError(PgvaultError):
    """Bytes do not match their recorded sha256 (corruption or tampering). The one error
    every verified read (pgvault.storage.verified, fsutil.copy_verified) raises on a
    mismatch."""


class Superseded(IntegrityError):
    """The object no longer holds the upload a record describes: a later upload of the
    same content replaced it (age output differs each time). The verify stage skips the
    stale event; anyone else treats it as the mismatch it is."""


class EncryptionError(PgvaultError):
    """Missing or wrong age identity, bad recipient, undecryptable object."""


class CatalogError(PgvaultError):
    """The SQLite catalog cannot be opened, migrated or written."""

    transient = True


class CatalogClusterMismatch(ConfigError, CatalogError):
    """The catalog file belongs to another cluster: a configuration mistake that no
    retry can fix (permanent, exit 2)."""

    transient = False


class StateError(CatalogError):
    """The alert state file cannot be opened or written (transient: retried)."""


class ManifestError(PgvaultError):
    """A backup's manifest.json is unreadable, invalid or of an unknown version: the
    backup is not trusted (never catalogued from it, never restored from it)."""


class PostgresError(PgvaultError):
    """PostgreSQL or one of its client tools failed."""


class BackupError(PgvaultError):
    """A backup could not be completed."""


class RestoreError(PgvaultError):
    """A restore was refused or failed; nothing was overwritten."""


class NotRestorable(RestoreError):
    """The catalog cannot prove the requested target is restorable."""


class ChannelError(PgvaultError):
    """An alert channel (e-mail, Discord) could not deliver; worth retrying later."""

    transient = True


class RetryLater(PgvaultError):
    """A worker precondition is not met yet (e.g. the spool file is still arriving)."""

    transient = True
