"""Verify stage: `artifact.stored.*` -> read back, check -> `verified` | `corrupt`/`missing`.

Invariant 5: nothing is verified until its bytes were read back from the store and
matched the sha256 the producer recorded. For every file: the stored bytes must hash to
the sha256 upload recorded, and, decoded (zstd, age), to the producer's sha256. Without
an age identity an encrypted object can only be checked at the stored-bytes level; the
event then says `content_verified: false`.

On failure: a `corrupt`/`missing` event for the catalog, an alert, and, when the spool
still has the file, a `ready` event with `reupload` so upload replaces the bad copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pgvault.broker.base import Broker
from pgvault.config import Settings
from pgvault.errors import IntegrityError, ObjectMissing, Superseded
from pgvault.log import for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent
from pgvault.spool.scan import locate
from pgvault.storage import ObjectStore
from pgvault.storage.verified import read_back

log = logging.getLogger(__name__)


class VerifyStage:
    name = "verify"

    def __init__(
        self, settings: Settings, store: ObjectStore, broker: Broker, identities: Sequence[Any] = ()
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.identities = list(identities)

    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        if not isinstance(event, ArtifactEvent) or event.state != "stored":
            return
        subject = f"{event.kind}/{event.name}"
        alog = for_artifact(log, subject)
        problems: list[str] = []
        missing = False
        content_verified = True
        for f in event.files:
            try:
                _stored, content = read_back(self.store, f, self.identities)
                content_verified = content_verified and content is not None
            except Superseded as exc:
                alog.info("%s; nothing to do for this event", exc)
                return
            except ObjectMissing as exc:
                missing = True
                problems.append(str(exc))
            except IntegrityError as exc:
                problems.append(str(exc))
        if not problems:
            meta = dict(event.meta, content_verified=content_verified)
            self.broker.publish_event(event.evolve(state="verified", meta=meta))
            alog.info(
                "verified %d file(s)%s",
                len(event.files),
                "" if content_verified else " (stored bytes only: no age identity here)",
            )
            return
        state = "missing" if missing else "corrupt"
        error = "; ".join(problems)
        alog.error("verification failed: %s", error)
        self.broker.publish_event(event.evolve(state=state, error=error))
        art = locate(self.settings.spool_dir, event.kind, event.name)
        action = (
            "re-uploading from the spool copy"
            if art is not None
            else "no spool copy left: take a new backup (or restore the object) and re-verify"
        )
        self.broker.publish_event(
            AlertEvent(
                cluster=self.settings.cluster,
                severity="critical",
                check=f"artifact_{state}",
                subject=subject,
                summary=f"{subject} failed verification: {error}",
                action=action,
            )
        )
        if art is not None:
            self.broker.publish_event(art.ready_event(self.settings.cluster, reupload=True))
