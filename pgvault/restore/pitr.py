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
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import lease
from pgvault.catalog.restorable import Plan, consistent_point, restorable_at
from pgvault.catalog.rows import BackupRow
from pgvault.catalog.timelines import set_current
from pgvault.config import Settings
from pgvault.errors import NotRestorable, RestoreError
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, run_tool
from pgvault.progress import byte_progress
from pgvault.restore.fetch import fetch_file
from pgvault.restore.recovery_conf import ensure_server_files, write_recovery
from pgvault.restore.safetar import chown_tree, extract_zst_tar
from pgvault.restore.server import RestoredServer
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


def _prepare_target(target_dir: Path, needed: int) -> None:
    if target_dir.exists() and any(target_dir.iterdir()):
        raise RestoreError(f"target directory {target_dir} is not empty; refusing to overwrite it")
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    free = shutil.disk_usage(target_dir).free
    if free < needed:
        raise RestoreError(
            f"{target_dir}: {free // 2**20} MiB free, the restore needs about {needed // 2**20} MiB"
        )


def _empty(target_dir: Path, *, remove: bool) -> None:
    """Undo a failed restore: remove the directory we created, or empty the one given."""
    if remove:
        shutil.rmtree(target_dir, ignore_errors=True)
        return
    for child in target_dir.iterdir() if target_dir.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _materialize(
    settings: Settings,
    store: ObjectStore,
    backup: BackupRow,
    staging: Path,
    target_dir: Path,
    *,
    identities: list[Any],
    from_store: bool,
) -> dict[str, str]:
    """Fetch the base backup (sha256-checked), extract it, pg_verifybackup the tree."""
    backup_id = str(backup.backup_id)
    files = {f.name: f for f in backup.file_infos()}
    total = sum(f.size for n, f in files.items() if n != "manifest.json")
    fetched = {}
    with byte_progress(f"fetching base backup {backup_id}", total) as advance:
        for name in ("base.tar.zst", "pg_wal.tar.zst", "backup_manifest"):
            fetched[name] = fetch_file(
                settings,
                store,
                files[name],
                staging / name,
                kind="physical",
                name=backup_id,
                identities=identities,
                advance=advance,
                prefer_spool=not from_store,
            )
    for_artifact(log, f"physical/{backup_id}").info("extracting into %s", target_dir)
    extract_zst_tar(staging / "base.tar.zst", target_dir)
    extract_zst_tar(staging / "pg_wal.tar.zst", target_dir / "pg_wal")
    shutil.copy2(staging / "backup_manifest", target_dir / "backup_manifest")
    # every extracted file against PostgreSQL's own manifest, and the WAL it needs
    run_tool(
        [find_tool("pg_verifybackup", settings.postgres.bin_dir), str(target_dir)],
        what="pg_verifybackup",
        timeout=3600,
    )
    return fetched


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
) -> PitrResult:
    t0 = time.monotonic()
    plan = _planned(catalog, to, backup_id)
    backup = plan.backup
    backup_id = str(backup.backup_id)
    meta = backup.meta
    staged = sum(int(f.get("size") or 0) for f in backup.files)  # the fetched archives
    created = not target_dir.exists()
    _prepare_target(target_dir, int(meta.get("data_size") or 0) + plan.wal_bytes + staged)
    wal_ranges = [(p.timeline, p.first, p.last) for p in plan.window.portions]
    with lease(
        catalog,
        f"restore pitr to {plan.target}",
        artifacts=[("physical", backup_id)],
        wal=wal_ranges,
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
        return _restore(
            settings,
            catalog,
            store,
            plan=plan,
            target_dir=target_dir,
            port=port,
            start=start,
            action=action,
            as_primary=as_primary,
            identities=identities or [],
            owner=owner,
            timeout=timeout,
            from_store=from_store,
            t0=t0,
            created=created,
        )


def _restore(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    *,
    plan: Plan,
    target_dir: Path,
    port: int | None,
    start: bool,
    action: str,
    as_primary: bool,
    identities: list[Any],
    owner: str,
    timeout: float,
    from_store: bool,
    t0: float,
    created: bool,
) -> PitrResult:
    backup = plan.backup
    backup_id = str(backup.backup_id)
    alog = for_artifact(log, f"physical/{backup_id}")
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    fetched: dict[str, str] = {}
    try:
        fetched = _materialize(
            settings,
            store,
            backup,
            staging,
            target_dir,
            identities=identities or [],
            from_store=from_store,
        )
    except BaseException:
        # nothing half-restored is left behind: the target was empty or absent before
        _empty(target_dir, remove=created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    superuser = settings.postgres.user
    ensure_server_files(target_dir, settings.postgres.bin_dir, superuser)
    port = port or free_port()
    socket_dir = Path(tempfile.mkdtemp(prefix="pgvault-sock-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        chown_tree(target_dir, pw.pw_uid, pw.pw_gid)
        os.chown(socket_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(target_dir, 0o700)
    write_recovery(
        target_dir,
        settings,
        target=plan.target,
        timeline=plan.target_timeline,
        action=action,
        port=port,
        socket_dir=socket_dir,
        backup_id=backup_id,
        as_primary=as_primary,
        from_store=from_store,
    )
    restored_to = None
    replay_s = None
    if start:
        server = RestoredServer(target_dir, port, settings.postgres.bin_dir, superuser, socket_dir)
        started_at = time.monotonic()
        try:
            server.start(timeout=int(timeout))
            restored_to = server.wait_recovered(action, timeout)
        except BaseException:
            server.stop("immediate")  # never leave a half-recovered server running
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        replay_s = round(time.monotonic() - started_at, 2)
        if as_primary and action == "promote":
            new_timeline = server.timeline()
            server.forget_recovery_settings()
            set_current(catalog, new_timeline)
            alog.info("timeline %d is now production's (catalog updated)", new_timeline)
        alog.info("recovery reached its target; last replayed commit %s", restored_to)
    return PitrResult(
        target=plan.target,
        backup_id=backup_id,
        target_dir=str(target_dir),
        port=port,
        socket_dir=str(socket_dir),
        timeline=plan.target_timeline,
        segments=plan.segments,
        wal_bytes=plan.wal_bytes,
        archive_mode="on" if as_primary else "off",
        started=start,
        restored_to=restored_to,
        fetched_from=fetched,
        duration_s=round(time.monotonic() - t0, 2),
        replay_s=replay_s,
    )
