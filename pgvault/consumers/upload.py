"""Upload stage: `artifact.ready.*` -> compress, (encrypt), upload -> `artifact.stored.*`.

Idempotent by artifact identity + sha256: an object already in the store whose
content-sha256 matches is adopted, not uploaded again; one with different content is
never overwritten (ObjectConflict -> dead letter + alert), unless the event is a
`reupload` sent by verify after the stored copy failed its read-back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from pgvault.broker.base import Broker
from pgvault.config import Settings
from pgvault.errors import IntegrityError, ObjectConflict, RetryLater
from pgvault.log import for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent, FileInfo
from pgvault.spool.scan import SpoolArtifact, locate
from pgvault.storage import ObjectStore, objmeta
from pgvault.storage.codec import Digest, encode_file
from pgvault.storage.layout import Layout
from pgvault.walinfo import wal_facts

log = logging.getLogger(__name__)

PLAIN_FILES = ("manifest.json",)  # commit markers stay readable: rebuild needs no key


def compress_for(kind: str) -> bool:
    """WAL files are zstd-compressed; history files are tiny text, and dumps and base
    backups arrive already compressed by pg_dump / pg_basebackup."""
    return kind == "wal"


def encrypt_for(filename: str, recipients: list[str]) -> list[str]:
    return [] if filename in PLAIN_FILES else recipients


class UploadStage:
    name = "upload"

    def __init__(self, settings: Settings, store: ObjectStore, broker: Broker) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.layout = Layout(settings.storage.prefix, settings.cluster)
        # scratch space outside the spool: a full spool must still be able to drain
        self.tmp_dir = settings.work_dir

    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        if not isinstance(event, ArtifactEvent) or event.state != "ready":
            return
        alog = for_artifact(log, f"{event.kind}/{event.name}")
        art = locate(self.settings.spool_dir, event.kind, event.name)
        if art is None:
            stored = self._adopt_from_store(event)
            if stored is None:
                raise IntegrityError(
                    f"{event.kind} {event.name} is neither in the spool nor in the store"
                )
            alog.info("already stored (spool copy gone); confirming")
            self.broker.publish_event(stored)
            return
        meta = dict(event.meta)
        if event.kind in ("wal", "history"):
            meta.update(wal_facts(art.path, self.settings.postgres.bin_dir))
        files = [self._upload_file(event, art, f, meta) for f in event.files]
        self.broker.publish_event(
            event.evolve(state="stored", files=tuple(files), meta=meta, reupload=False)
        )
        alog.info(
            "stored %d file(s), %d bytes -> %d bytes",
            len(files),
            sum(f.size for f in files),
            sum(f.stored_size or 0 for f in files),
        )

    def _object_facts(self, event: ArtifactEvent, meta: dict[str, Any]) -> dict[str, Any] | None:
        return meta if event.kind in ("wal", "history") else None

    def _upload_file(
        self, event: ArtifactEvent, art: SpoolArtifact, original: FileInfo, meta: dict[str, Any]
    ) -> FileInfo:
        key = self.layout.key(event.kind, event.name, original.name)
        alog = for_artifact(log, key)
        existing = self.store.head(key)
        if existing is not None and not event.reupload:
            same = existing.metadata.get("content-sha256") == original.sha256
            if not same:
                raise ObjectConflict(
                    f"{key} already exists in {self.store.describe()} with different content; "
                    "refusing to overwrite"
                )
            enc = objmeta.encoding_of(existing.metadata)
            if enc.encryption == "none" and existing.metadata.get("sha256"):
                # adopted: verify decodes it and checks the producer's sha256 itself
                alog.info(
                    "already in %s with the same content; not uploading again",
                    self.store.describe(),
                )
                return original.model_copy(
                    update={
                        "key": key,
                        "stored_size": existing.size,
                        "stored_sha256": existing.metadata["sha256"],
                        "codec": enc.codec,
                        "encryption": enc.encryption,
                    }
                )
            # an encrypted copy can only be checked against our own upload record (a host
            # without the identity cannot decrypt it): encrypt and upload it again
            alog.info(
                "replacing the encrypted copy in %s with one this upload can vouch for",
                self.store.describe(),
            )
        src = art.file_path(original.name)
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            foreign = self.tmp_dir.lstat().st_uid != os.geteuid()
        except OSError as exc:
            raise RetryLater(
                f"work_dir {self.tmp_dir}: {exc.strerror or exc} (see [service] work_dir)"
            ) from None
        if foreign:
            raise RetryLater(f"work_dir {self.tmp_dir} belongs to another user; not using it")
        tmp = self.tmp_dir / f"upload-{uuid.uuid4().hex}"
        try:
            recipients = encrypt_for(original.name, self.settings.encryption.recipients)
            encoding, stored, content = encode_file(
                src,
                tmp,
                compress=compress_for(event.kind),
                level=self.settings.storage.compression_level,
                recipients=recipients,
            )
            self._check_source(src, original, content)
            metadata = objmeta.build(
                kind=event.kind,
                name=event.name,
                original=original,
                encoding=encoding,
                stored=stored,
                meta=self._object_facts(event, meta),
                recipients=recipients,
            )
            self.store.put_file(key, tmp, metadata)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return original.model_copy(
            update={
                "key": key,
                "stored_size": stored.size,
                "stored_sha256": stored.sha256,
                "codec": encoding.codec,
                "encryption": encoding.encryption,
            }
        )

    def _check_source(self, src: Path, original: FileInfo, content: Digest) -> None:
        """The spool copy must still be the bytes the producer checksummed."""
        if content.sha256 != original.sha256 or content.size != original.size:
            self.broker.publish_event(
                AlertEvent(
                    cluster=self.settings.cluster,
                    severity="critical",
                    check="spool_corrupt",
                    subject=src.name,
                    summary=f"spool file {src} no longer matches the sha256 recorded when it was "
                    "written; it was not uploaded",
                    action="check the spool disk; the artifact must be produced again",
                )
            )
            raise IntegrityError(f"spool file {src} changed since it was written (sha256 mismatch)")

    def _adopt_from_store(self, event: ArtifactEvent) -> ArtifactEvent | None:
        """The spool copy was cleaned up: if the store already holds it, confirm."""
        files = []
        meta = dict(event.meta)
        for original in event.files:
            key = self.layout.key(event.kind, event.name, original.name)
            info = self.store.head(key)
            if info is None:
                if event.reupload:
                    return None
                raise RetryLater(f"{key}: spool copy gone and object not in the store yet")
            if info.metadata.get("content-sha256") != original.sha256:
                return None
            enc = objmeta.encoding_of(info.metadata)
            meta.update(objmeta.facts_of(info.metadata))
            files.append(
                original.model_copy(
                    update={
                        "key": key,
                        "stored_size": info.size,
                        "stored_sha256": info.metadata.get("sha256"),
                        "codec": enc.codec,
                        "encryption": enc.encryption,
                    }
                )
            )
        return event.evolve(state="stored", files=tuple(files), meta=meta, reupload=False)
