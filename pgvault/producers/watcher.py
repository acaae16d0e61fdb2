"""`pgvault producer`: the spool watcher daemon.

Watches the spool with watchdog (inotify) and announces every finished artifact as a
persistent `artifact.ready.<kind>` event; publishes alert files left by wal-archive;
removes spool copies that are verified in the store and older than
`retention.local_keep_days`.

It never drops an announcement: while the broker is down it keeps retrying (the files
stay in the spool), and on start, and every `rescan_s` after, it reconciles the spool
with the catalog and re-announces whatever is not verified yet (inotify can overflow;
a crash can lose an in-memory queue; the pipeline is idempotent, so repeats are free).
An announced artifact that is not verified yet (lost, dead-lettered, e.g. after a full
disk) is announced again with a backoff: after 5 s for WAL (60 s for backups), doubling
up to `reannounce_s` (5 min); one already `stored` waits for verify (6 x reannounce_s).
A spool entry the producer cannot read is an alert (`spool_unreadable`), not a skip.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from datetime import datetime
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from pgvault import spool
from pgvault.broker.base import Broker, declare_until_up
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import state_of
from pgvault.catalog.rows import ArtifactRow
from pgvault.config import Settings
from pgvault.daemon import sd_notify
from pgvault.errors import BrokerError, PgvaultError
from pgvault.log import for_artifact
from pgvault.schemas import AlertEvent, ArtifactEvent
from pgvault.spool.janitor import clean_spool, clean_stale_tmp
from pgvault.spool.scan import SpoolArtifact, artifact_at, scan, unreadable_entries
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


class _Events(FileSystemEventHandler):
    def __init__(self, sink: queue.Queue[Path]) -> None:
        self.sink = sink

    def on_created(self, event: FileSystemEvent) -> None:
        self.sink.put(Path(str(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        self.sink.put(Path(str(event.dest_path)))


class Producer:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        catalog: CatalogDB | None,
        *,
        store: ObjectStore | None = None,
        rescan_s: float = 60.0,
        reannounce_s: float = 300.0,
        retry_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.spool_dir = settings.spool_dir
        self.broker = broker
        self.catalog = catalog
        self.store = store
        self.rescan_s = rescan_s
        self.reannounce_s = reannounce_s
        self.retry_s = retry_s  # how often announced-but-unverified artifacts are looked at
        self.announced: dict[tuple[str, str], float] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.unreadable_alerted: set[str] = set()
        self.stop = threading.Event()
        self.published = 0

    # -- publishing, never dropping ------------------------------------------------
    def _publish(self, event: ArtifactEvent | AlertEvent) -> bool:
        """Publish, retrying through broker outages until it works or we are stopped."""
        delay = 1.0
        warned = False
        while not self.stop.is_set():
            try:
                self.broker.publish_event(event)
                if warned:
                    log.info("broker reachable again; publishing resumed")
                self.published += 1
                return True
            except BrokerError as exc:
                if not warned:
                    log.warning("cannot publish (%s); the spool keeps the files, retrying", exc)
                    warned = True
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return False

    def announce(self, art: SpoolArtifact) -> bool:
        try:
            event = art.ready_event(self.settings.cluster)
        except ValueError as exc:  # a name the schema refuses never leaves the spool
            reason = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
            for_artifact(log, f"{art.kind}/{art.name}").error("not announced: %s", reason)
            return False
        if not self._publish(event):
            return False
        key = (art.kind, art.name)
        self.announced[key] = time.monotonic()
        self.attempts[key] = self.attempts.get(key, 0) + 1
        for_artifact(log, f"{art.kind}/{art.name}").info("announced")
        return True

    def publish_alert_files(self) -> None:
        for path, record in spool.pending_alerts(self.spool_dir):
            try:
                alert = AlertEvent(cluster=self.settings.cluster, **record)
            except (TypeError, ValueError):
                log.error("unreadable alert file %s left in place", path)
                continue
            if self._publish(alert):
                path.unlink(missing_ok=True)

    # -- reconciliation and clean-up -----------------------------------------------
    def _state(self, art: SpoolArtifact) -> ArtifactRow | None:
        return state_of(self.catalog, art.kind, art.name) if self.catalog else None

    def backoff(self, key: tuple[str, str], state: str | None) -> float:
        """Seconds to wait after the last announcement before announcing again."""
        if state == "stored":  # waiting for verify; uploading again would only race it
            return self.reannounce_s * 6
        first = 5.0 if key[0] in ("wal", "history") else 60.0
        tries = max(self.attempts.get(key, 1), 1)
        return float(min(first * 2.0 ** (tries - 1), max(self.reannounce_s, first)))

    def _due(self, art: SpoolArtifact, now: float, *, initial: bool) -> bool | None:
        """None when verified (nothing to do), else whether to announce it now."""
        row = self._state(art)
        key = (art.kind, art.name)
        if row is not None and row.state == "verified":
            self.announced.pop(key, None)
            self.attempts.pop(key, None)
            return None
        last = self.announced.get(key)
        if initial or last is None:
            return True
        return now - last >= self.backoff(key, row.state if row else None)

    def reconcile(self, *, initial: bool = False) -> int:
        """Announce spool artifacts the catalog does not show as verified."""
        self.report_unreadable()
        count = 0
        now = time.monotonic()
        for art in scan(self.spool_dir):
            if self.stop.is_set():
                break
            if self._due(art, now, initial=initial) and self.announce(art):
                count += 1
        if count:
            log.info("reconciled: announced %d unverified artifact(s)", count)
        return count

    def retry_pending(self) -> int:
        """The quick pass (every `retry_s`): only artifacts announced and not verified yet,
        each on its own backoff, so a dead-lettered one goes again within seconds."""
        count = 0
        now = time.monotonic()
        for kind, name in list(self.announced):
            art = artifact_at(self.spool_dir, self._spool_path(kind, name))
            if art is None:  # gone (cleaned up) or unreadable: the full rescan reports it
                self.announced.pop((kind, name), None)
                self.attempts.pop((kind, name), None)
                continue
            if self._due(art, now, initial=False) and self.announce(art):
                for_artifact(log, f"{kind}/{name}").info(
                    "announced again (attempt %d): not verified yet", self.attempts[(kind, name)]
                )
                count += 1
        return count

    def _spool_path(self, kind: str, name: str) -> Path:
        sub = "wal" if kind in ("wal", "history") else kind
        return self.spool_dir / sub / name

    def report_unreadable(self) -> None:
        """A spool entry the service user cannot read is never announced: say so, once per
        entry, as an alert (e.g. a backup directory left by a command run as root)."""
        for path, reason in unreadable_entries(self.spool_dir):
            if str(path) in self.unreadable_alerted:
                continue
            for_artifact(log, str(path)).error("spool entry unreadable (%s); not announced", reason)
            alert = AlertEvent(
                cluster=self.settings.cluster,
                severity="critical",
                check="spool_unreadable",
                subject=str(path.relative_to(self.spool_dir)),
                summary=f"spool entry {path} cannot be read by the producer ({reason}); "
                "it is not announced, uploaded or verified",
                action=f"chown -R {self.settings.service.user}: {path} and run backups as "
                "root or the service user (they switch to it)",
            )
            if self._publish(alert):
                self.unreadable_alerted.add(str(path))

    def clean_spool(self, now: datetime | None = None) -> list[str]:
        if self.catalog is None:
            return []
        return clean_spool(self.settings, self.catalog, now)

    def clean_stale_tmp(self, max_age_s: float = 6 * 3600) -> int:
        return clean_stale_tmp(self.spool_dir, max_age_s)

    def export_receipts(self) -> None:
        """Verification receipts into the store (catalog/export.py), best effort."""
        if self.catalog is None or self.store is None:
            return
        from pgvault.catalog.export import export
        from pgvault.storage.layout import Layout

        try:
            export(
                self.catalog,
                self.store,
                Layout(self.settings.storage.prefix, self.settings.cluster),
                encrypted=bool(self.settings.encryption.recipients),
            )
        except PgvaultError as exc:
            log.warning("catalog export to the store failed (%s); retrying next rescan", exc)

    def _consider(self, path: Path) -> None:
        if path.parent == self.spool_dir / "alerts":
            self.publish_alert_files()
            return
        art = artifact_at(self.spool_dir, path)
        if art is not None and (art.kind, art.name) not in self.announced:
            self.announce(art)
        elif art is None and not os.access(path, os.R_OK):
            self.report_unreadable()

    # -- the daemon ----------------------------------------------------------------
    def run(self, *, once: bool = False) -> None:
        spool.ensure_layout(self.spool_dir)
        if once:
            self.broker.declare()
            self.publish_alert_files()
            self.reconcile(initial=True)
            self.clean_spool()
            self.clean_stale_tmp()
            self.export_receipts()
            return
        # started while the broker is down: wait for it (the spool keeps everything)
        if not declare_until_up(self.broker, self.stop, "producer"):
            return
        events: queue.Queue[Path] = queue.Queue()
        observer = Observer()
        observer.schedule(_Events(events), str(self.spool_dir), recursive=True)
        observer.start()
        try:
            self.publish_alert_files()
            self.reconcile(initial=True)
            sd_notify("READY=1")
            log.info("watching %s", self.spool_dir)
            next_scan = time.monotonic() + self.rescan_s
            next_retry = time.monotonic() + self.retry_s
            while not self.stop.is_set():
                try:
                    self._consider(events.get(timeout=0.5))
                except queue.Empty:
                    pass
                except PgvaultError as exc:
                    log.error("%s", exc)
                if time.monotonic() >= next_retry:
                    self.retry_pending()
                    next_retry = time.monotonic() + self.retry_s
                if time.monotonic() >= next_scan:
                    self.publish_alert_files()
                    self.reconcile()
                    self.clean_spool()
                    self.clean_stale_tmp()
                    self.export_receipts()
                    sd_notify("WATCHDOG=1")
                    next_scan = time.monotonic() + self.rescan_s
        finally:
            observer.stop()
            observer.join(timeout=5)
