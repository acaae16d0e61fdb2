"""`pgvault restore pitr --to T --target-dir DIR`: a base backup plus WAL, replayed to T.

Uses the catalog's plan (restorable_at), refuses a non-empty target, fetches the base
backup files proven by sha256, extracts them safely, checks the extracted tree with
pg_verifybackup, writes the recovery settings (restore_command = pgvault wal-restore,
archiving off unless --as-primary) and, with --start, runs recovery to the target and
reports the restored point and the time it took.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import lease
from pgvault.catalog.restorable import Plan, consistent_point, restorable_at
from pgvault.catalog.tablespaces import ReplayTablespaces, replay_tablespaces
from pgvault.catalog.timelines import set_current
from pgvault.config import Settings
from pgvault.errors import NotRestorable
from pgvault.log import for_artifact
from pgvault.restore import pitr_files
from pgvault.restore.combine import materialize_chain
from pgvault.restore.recovery_conf import ensure_server_files, write_recovery
from pgvault.restore.safetar import chown_tree
from pgvault.restore.server import RestoredServer, make_socket_dir, remove_socket_dir
from pgvault.restore.tablespaces import Mapped, Source, plan_mapping, sources_of
from pgvault.restore.unlogged import UnloggedRelation, best_effort
from pgvault.restore.version import for_backup
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class PitrResult:
    target: str
    backup_id: str
    target_dir: str
    port: int
    socket_dir: str
    timeline: int
    segments: int
    wal_bytes: int
    archive_mode: str
    started: bool
    restored_to: str | None
    fetched_from: dict[str, str]
    duration_s: float
    replay_s: float | None = None  # server start -> target reached (WAL replay)
    tablespaces: list[dict[str, Any]] = field(default_factory=list)
    # issue 16 §6: relations PostgreSQL itself brings back empty (relpersistence = 'u')
    unlogged: list[UnloggedRelation] = field(default_factory=list)
    unlogged_error: str | None = None  # the restored server could not be asked
    chain: list[str] = field(default_factory=list)  # backups combined, full first
    first_segment: str = ""  # the first WAL segment replay reads (the plan's)
    seg_size: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def not_restorable_message(answer: Any) -> str:
    parts = [f"{answer.target} is not restorable from the catalog"]
    if answer.before:
        parts.append(f"latest restorable point before it: {answer.before}")
    if answer.after:
        parts.append(f"earliest after it: {answer.after}")
    if not answer.windows:
        parts.append("no verified base backup (run `pgvault backup physical`)")
    return "; ".join(parts) + " (see `pgvault catalog restorable`)"


def _planned(catalog: CatalogDB, to: datetime | None, backup_id: str | None) -> Plan:
    """PITR to `to` (optionally from one base backup), or a backup's consistent point."""
    if to is None:
        if backup_id is None:
            raise NotRestorable("give --to T, or --backup ID to restore a base backup as it was")
        plan = consistent_point(catalog, backup_id)
        if plan is None:
            raise NotRestorable(f"no verified base backup {backup_id} in the catalog")
        return plan
    answer = restorable_at(catalog, to, backup_id)
    if answer.plan is None:
        raise NotRestorable(not_restorable_message(answer))
    return answer.plan


@dataclass
class _Job:
    """One restore, as planned: what every step needs."""

    settings: Settings
    catalog: CatalogDB
    store: ObjectStore
    plan: Plan
    target_dir: Path
    created: bool  # the target did not exist before: a failure removes it
    replay: ReplayTablespaces
    mapped: list[Mapped]
    user_map: dict[str, Path]
    port: int | None
    start: bool
    action: str
    as_primary: bool
    identities: list[Any]
    owner: str
    timeout: float
    from_store: bool
    t0: float
    extractor: pitr_files.Extractor | None = None  # restore table|database: partial

    @property
    def backup_id(self) -> str:
        return str(self.plan.backup.backup_id)

    def undo(self) -> None:
        """Nothing half-restored is left behind: the target (and every mapped tablespace
        directory) was empty or absent before."""
        pitr_files.empty(self.target_dir, remove=self.created)
        pitr_files.remove_outside(self.target_dir, self.mapped)


def restore_pitr(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    *,
    to: datetime | None,
    target_dir: Path,
    backup_id: str | None = None,
    port: int | None = None,
    start: bool = False,
    action: str = "promote",
    as_primary: bool = False,
    identities: list[Any] | None = None,
    owner: str = "postgres",
    timeout: float = 3600,
    from_store: bool = False,
    tablespace_map: dict[str, Path] | None = None,
    extractor: pitr_files.Extractor | None = None,
) -> PitrResult:
    t0 = time.monotonic()
    plan = _planned(catalog, to, backup_id)
    backup = plan.backup
    # the backup's own major version restores it (one line when it is not installed)
    settings = for_backup(settings, backup.meta, f"backup {backup.backup_id}")
    # invariant 11, decided before anything is fetched: where every tablespace goes
    user_map = tablespace_map or {}
    replay = replay_tablespaces(
        catalog.conn, [(p.timeline, p.first, p.last) for p in plan.window.portions]
    )
    in_backup = [
        Source(int(t["oid"]), str(t["location"]), str(t["name"]), in_backup=True)
        for t in backup.meta.get("tablespaces") or []
    ]
    mapped = plan_mapping(target_dir, sources_of(replay, in_backup), user_map)
    staged = sum(int(f.get("size") or 0) for b in plan.chain for f in b.files)  # archives
    if len(plan.chain) > 1:  # each backup extracted for pg_combinebackup; a full-size target
        staged += sum(int(b.meta.get("data_size") or 0) for b in (*plan.chain, plan.chain[0]))
    created = not target_dir.exists()
    pitr_files.prepare_target(
        target_dir, int(backup.meta.get("data_size") or 0) + plan.wal_bytes + staged
    )
    job = _Job(
        settings, catalog, store, plan, target_dir, created, replay, mapped, user_map,
        port, start, action, as_primary, identities or [], owner, timeout, from_store, t0,
        extractor,
    )  # fmt: skip
    with lease(
        catalog,
        f"restore pitr to {plan.target}",
        artifacts=[("physical", b.label) for b in plan.chain],
        wal=[(p.timeline, p.first, p.last) for p in plan.window.portions],
        hours=max(1.0, timeout / 3600 + 1),
    ):
        # retention may have marked something in the plan while it was being made
        try:
            again: Plan | None = _planned(catalog, to, backup_id)
        except NotRestorable:
            again = None
        if again is None or again.window.backup_id != plan.window.backup_id:
            raise NotRestorable(
                f"{plan.target}: the plan changed while the restore began "
                "(retention?); run the restore again"
            )
        return _restore(job)


def _restore(job: _Job) -> PitrResult:
    fetched = _lay_out_files(job)
    port, socket_dir = _configure(job)
    restored_to, replay_s = _recover(job, port, socket_dir) if job.start else (None, None)
    if job.start and job.action == "shutdown":
        remove_socket_dir(socket_dir)  # the server stopped itself at the target
    unlogged: list[UnloggedRelation] = []
    unlogged_error = None
    if job.start and job.action != "shutdown":
        server = RestoredServer(
            job.target_dir,
            port,
            job.settings.postgres.bin_dir,
            job.settings.postgres.user,
            socket_dir,
        )
        unlogged, unlogged_error = best_effort(server.settings())
        for rel in unlogged:
            for_artifact(log, f"physical/{job.backup_id}").warning(
                "unlogged %s %s.%s in database %s is empty after the restore (PostgreSQL "
                "does not WAL-log it)",
                rel["kind"],
                rel["schema"],
                rel["name"],
                rel["db"],
            )
    return PitrResult(
        target=job.plan.target,
        backup_id=job.backup_id,
        target_dir=str(job.target_dir),
        port=port,
        socket_dir=str(socket_dir),
        timeline=job.plan.target_timeline,
        segments=job.plan.segments,
        wal_bytes=job.plan.wal_bytes,
        archive_mode="on" if job.as_primary else "off",
        started=job.start,
        restored_to=restored_to,
        fetched_from=fetched,
        duration_s=round(time.monotonic() - job.t0, 2),
        replay_s=replay_s,
        tablespaces=[m.as_dict() for m in job.mapped],
        unlogged=unlogged,
        unlogged_error=unlogged_error,
        chain=[b.label for b in job.plan.chain],
        first_segment=job.plan.first_segment,
        seg_size=job.plan.window.seg_size,
    )


def _lay_out_files(job: _Job) -> dict[str, str]:
    """Step 1: the base backup fetched, proven and extracted; the tablespace guard set."""
    target_dir = job.target_dir
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        if len(job.plan.chain) > 1:  # an incremental (PostgreSQL 17+): combine its chain
            fetched = materialize_chain(
                job.settings, job.store, job.plan.chain, staging, target_dir,
                identities=job.identities, from_store=job.from_store, mapped=job.mapped,
            )  # fmt: skip
        else:
            fetched = pitr_files.materialize(
                job.settings,
                job.store,
                job.plan.backup,
                staging,
                target_dir,
                identities=job.identities,
                from_store=job.from_store,
                mapped=job.mapped,
                extractor=job.extractor,
            )
        ensure_server_files(target_dir, job.settings.postgres.bin_dir, job.settings.postgres.user)
        pitr_files.guard_tablespaces(job.settings, target_dir, job.replay, job.mapped, job.user_map)
    except BaseException:
        job.undo()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return fetched


def _configure(job: _Job) -> tuple[int, Path]:
    """Step 2: ownership, a private socket directory, the recovery settings."""
    port = job.port or free_port()
    socket_dir = make_socket_dir(port)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(job.owner)
        chown_tree(job.target_dir, pw.pw_uid, pw.pw_gid)
        for m in job.mapped:
            if m.directory.exists() and not m.directory.is_relative_to(job.target_dir):
                chown_tree(m.directory, pw.pw_uid, pw.pw_gid)
        os.chown(socket_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(job.target_dir, 0o700)
    write_recovery(
        job.target_dir,
        job.settings,
        target=job.plan.target,
        timeline=job.plan.target_timeline,
        action=job.action,
        port=port,
        socket_dir=socket_dir,
        backup_id=job.backup_id,
        as_primary=job.as_primary,
        from_store=job.from_store,
    )
    return port, socket_dir


def _recover(job: _Job, port: int, socket_dir: Path) -> tuple[str | None, float]:
    """Step 3 (--start): run recovery to the target; the restored point and replay time."""
    alog = for_artifact(log, f"physical/{job.backup_id}")
    server = RestoredServer(
        job.target_dir, port, job.settings.postgres.bin_dir, job.settings.postgres.user, socket_dir
    )
    started_at = time.monotonic()
    try:
        server.prefetch_from(
            job.plan.first_segment,
            job.plan.window.seg_size,
            job.settings,
            from_store=job.from_store,
        )
        server.start(timeout=int(job.timeout), may_stop_at_target=job.action == "shutdown")
        restored_to = server.wait_recovered(job.action, job.timeout)
    except BaseException:
        server.stop("immediate")  # never leave a half-recovered server running
        remove_socket_dir(socket_dir)
        raise
    replay_s = round(time.monotonic() - started_at, 2)
    if job.as_primary and job.action == "promote":
        new_timeline = server.timeline()
        server.forget_recovery_settings()
        set_current(job.catalog, new_timeline)
        alog.info("timeline %d is now production's (catalog updated)", new_timeline)
    alog.info("recovery reached its target; last replayed commit %s", restored_to)
    return restored_to, replay_s
