"""`pgvault drill pitr`: prove point-in-time recovery works, from the store, on a schedule.

Picks a random time inside the newest restorable window, restores the cluster to it in a
scratch directory on a free port with WAL fetched from the store (not the spool), checks
that recovery reached the target and that the server answers (plus the configured
sanity query), records the drill with its measured RTO, removes everything, and alerts
when anything failed.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgvault import pg
from pgvault.alerting import raise_alert
from pgvault.broker.base import Broker
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.restorable import windows
from pgvault.catalog.runs import record_drill
from pgvault.config import Settings
from pgvault.errors import NotRestorable, PgvaultError
from pgvault.restore.pitr import restore_pitr
from pgvault.restore.server import RestoredServer
from pgvault.storage import ObjectStore
from pgvault.timeutil import parse_iso

log = logging.getLogger(__name__)


@dataclass
class DrillResult:
    ok: bool
    target: str
    backup_id: str
    duration_s: float
    details: dict[str, Any] = field(default_factory=dict)


def pick_target(catalog: CatalogDB, rng: random.Random) -> tuple[datetime, str]:
    usable = [w for w in windows(catalog) if w.usable and w.end]
    if not usable:
        raise NotRestorable("no restorable window to drill (no verified base backup + WAL yet)")
    newest = max(usable, key=lambda w: (w.end or "", w.start))
    start, end = parse_iso(newest.start), parse_iso(newest.end or newest.start)
    span = max((end - start).total_seconds(), 0.0)
    return start + timedelta(seconds=rng.uniform(0, span)), newest.backup_id


def drill_pitr(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    broker: Broker | None,
    *,
    scratch: Path,
    identities: list[Any],
    seed: int | None = None,
    owner: str = "postgres",
) -> DrillResult:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    target, backup_id = pick_target(catalog, random.Random(seed))
    target_dir = scratch / f"drill-pitr-{started.strftime('%Y%m%dT%H%M%SZ')}"
    details: dict[str, Any] = {"target": target.isoformat(), "target_dir": str(target_dir)}
    ok = False
    servers: list[RestoredServer] = []
    try:
        backup_id = _restore_and_prove(
            settings,
            catalog,
            store,
            target=target,
            target_dir=target_dir,
            identities=identities,
            owner=owner,
            details=details,
            servers=servers,
        )
        ok = True
    except Exception as exc:  # any failure is a failed drill: recorded and alerted
        details["error"] = (
            str(exc) if isinstance(exc, PgvaultError) else f"{type(exc).__name__}: {exc}"
        )
        log.error(
            "pitr drill failed: %s", details["error"], extra={"artifact": f"physical/{backup_id}"}
        )
    finally:
        for server in servers:
            server.stop("immediate")
            shutil.rmtree(server.socket_dir, ignore_errors=True)
        shutil.rmtree(target_dir, ignore_errors=True)
    record_and_alert(
        settings, catalog, broker, kind="pitr", target=target.isoformat(), backup_id=backup_id,
        started=started, ok=ok, details=details,
        summary=f"PITR drill to {target.isoformat()} failed: {details.get('error')}",
        action="run `pgvault drill pitr -v` and read the restored server log",
    )  # fmt: skip
    return DrillResult(ok, target.isoformat(), backup_id, round(time.monotonic() - t0, 2), details)


def _restore_and_prove(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    *,
    target: datetime,
    target_dir: Path,
    identities: list[Any],
    owner: str,
    details: dict[str, Any],
    servers: list[RestoredServer],
) -> str:
    """Restore from the store to `target`, check the point reached and that the server
    answers the sanity query; the running server is appended to `servers` (the caller
    stops it whatever happens). Returns the base backup used."""
    result = restore_pitr(
        settings,
        catalog,
        store,
        to=target,
        target_dir=target_dir,
        start=True,
        action="promote",
        identities=identities,
        owner=owner,
        from_store=True,
    )
    details.update(
        restored_to=result.restored_to,
        segments=result.segments,
        wal_bytes=result.wal_bytes,
        port=result.port,
        unlogged=result.unlogged,  # empty after any restore: PostgreSQL's behaviour
        tablespaces=result.tablespaces,
    )
    server = RestoredServer(
        target_dir,
        result.port,
        settings.postgres.bin_dir,
        settings.postgres.user,
        Path(result.socket_dir),
    )
    servers.append(server)
    if result.restored_to and parse_iso(result.restored_to) > target:
        raise NotRestorable(f"replayed past the target ({result.restored_to} > {target})")
    with pg.connect(server.settings()) as conn:
        details["databases"] = pg.fetch_value(
            conn, "SELECT count(*) FROM pg_database WHERE NOT datistemplate"
        )
        pg.fetch_all(conn, settings.postgres.sanity_query)
    details["sanity_query"] = "ok"
    return result.backup_id


def record_and_alert(
    settings: Settings,
    catalog: CatalogDB,
    broker: Broker | None,
    *,
    kind: str,
    target: str,
    backup_id: str,
    started: datetime,
    ok: bool,
    details: dict[str, Any],
    summary: str,
    action: str,
) -> None:
    """Record a drill in the catalog; a failed one also raises a critical `drill_failed` alert."""
    record_drill(
        catalog,
        kind=kind,
        target=target,
        backup=backup_id,
        started_at=started,
        finished_at=datetime.now(UTC),
        result="ok" if ok else "failed",
        details=details,
    )
    if not ok:
        raise_alert(
            settings,
            broker,
            severity="critical",
            check="drill_failed",
            subject=kind,
            summary=summary,
            action=action,
        )
