"""`pgvault drill table`: prove a table comes back as it was at a random time.

Picks a time inside the newest restorable window (as `drill pitr`) and a table of the
database (given, or one of its current tables at random), restores it with `restore
table` from the STORE into a scratch database `pgvault_drill_<hex>` on the configured
server, compares every restored table's rows (row digests) with the scratch cluster's
state at T while it still runs, records the drill and its measured time in the catalog,
drops the scratch database (the scratch cluster is removed by the restore itself) and
alerts when anything failed.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgvault import pg, pgtables
from pgvault.broker.base import Broker
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.errors import PgvaultError, RestoreError
from pgvault.restore import dbops
from pgvault.restore.drill_pitr import pick_target, record_and_alert
from pgvault.restore.logical_report import RestoreReport
from pgvault.restore.rowdigest import row_digest
from pgvault.restore.scratch import Scratch
from pgvault.restore.scratch_dump import ScratchDump
from pgvault.restore.table import TableRestoreRequest, restore_at
from pgvault.storage import ObjectStore

log = logging.getLogger(__name__)


def _pick_table(settings: Settings, db: str, rng: random.Random) -> str:
    with pg.connect(settings.postgres, db) as conn:
        tables = sorted(pgtables.list_tables(conn), key=lambda t: t.qualified)
    if not tables:
        raise RestoreError(f"database {db} has no table to drill")
    return rng.choice(tables).qualified


def _comparer(target_db: str, settings: Settings) -> Any:
    def compare(sc: Scratch, dump: ScratchDump, _report: RestoreReport) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with (
            pg.connect(sc.server.settings(), dump.manifest.db) as sconn,
            pg.connect(settings.postgres, target_db) as tconn,
        ):
            for t in dump.tables:
                at_t, restored = row_digest(sconn, t), row_digest(tconn, t)
                out[t.qualified] = {"rows": at_t[0], "equal": at_t == restored}
        bad = [name for name, v in out.items() if not v["equal"]]
        if bad:
            raise RestoreError(f"restored rows differ from the state at T in {', '.join(bad)}")
        return out

    return compare


def drill_table(
    settings: Settings,
    catalog: CatalogDB,
    store: ObjectStore,
    broker: Broker | None,
    *,
    db: str,
    table: str | None,
    seed: int | None,
    owner: str,
    scratch: Path | None,
    identities: list[Any],
) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    rng = random.Random(seed)
    target_db = f"pgvault_drill_{uuid.uuid4().hex[:10]}"
    details: dict[str, Any] = {"db": db, "scratch_db": target_db}
    backup_id = ""
    target = ""
    ok = False
    try:
        when, backup_id = pick_target(catalog, rng)
        target = when.isoformat()
        details["target"] = target
        details["table"] = table = table or _pick_table(settings, db, rng)
        req = TableRestoreRequest(
            db=db,
            at=when,
            target_db=target_db,
            tables=(table,),
            owner=owner,
            from_store=True,
            scratch_parent=scratch,
        )
        result = restore_at(
            settings, catalog, store, req, identities=identities,
            verify=_comparer(target_db, settings),
        )  # fmt: skip
        details.update(
            restored_to=result.restored_to,
            timings=result.timings,
            bytes_fetched=result.bytes_fetched,
            bytes_extracted=result.bytes_extracted,
            compared=result.verify,
        )
        backup_id = result.backup_id
        if result.error:
            raise RestoreError(result.error)
        ok = True
    except Exception as exc:  # any failure is a failed drill: recorded and alerted
        details["error"] = (
            str(exc) if isinstance(exc, PgvaultError) else f"{type(exc).__name__}: {exc}"
        )
        log.error("table drill failed: %s", details["error"], extra={"artifact": f"db/{db}"})
    finally:
        dbops.drop_quietly(settings, target_db)
    duration = round(time.monotonic() - t0, 2)
    record_and_alert(
        settings,
        catalog,
        broker,
        kind="table",
        target=target or started.isoformat(),
        backup_id=backup_id,
        started=started,
        ok=ok,
        details=details,
        summary=f"table drill of {details.get('table')} in {db} failed: {details.get('error')}",
        action="run `pgvault drill table -v` and read the scratch server log",
    )
    return {"ok": ok, "duration_s": duration, "backup_id": backup_id, **details}
