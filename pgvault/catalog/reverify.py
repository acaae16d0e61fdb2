"""Reading catalogued objects back after a rebuild (`catalog rebuild --verify`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB, now_iso
from pgvault.schemas import FileInfo
from pgvault.storage import ObjectStore


def verify_unproven(
    catalog: CatalogDB,
    store: ObjectStore,
    identities: list[Any],
    *,
    everything: bool = False,
    workers: int = 8,
    tick: Callable[[int], None] = lambda _n: None,
) -> tuple[int, list[str]]:
    """Read back every `stored` row (or every row): verified or corrupt/missing.
    Resumable: a rerun skips what this or an earlier run already proved."""
    from pgvault.consumers.verify import read_back
    from pgvault.errors import IntegrityError, ObjectMissing

    where = "state IN ('stored', 'verified')" if everything else "state = 'stored'"
    rows = catalog.query(
        f"SELECT id, kind, name, timeline, segno, files, meta FROM artifacts "  # noqa: S608
        f"WHERE deleted_at IS NULL AND expiring_at IS NULL AND {where}"
    )

    def check(row: dict[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
        """(row, None, content proved) or (row, "missing"|"corrupt" + reason, False)."""
        proved = True
        try:
            for f in json.loads(row["files"]):
                _s, content = read_back(store, FileInfo.model_validate(f), identities)
                proved = proved and content is not None
        except ObjectMissing as exc:
            return row, f"missing:{exc}", False
        except IntegrityError as exc:
            return row, f"corrupt:{exc}", False
        return row, None, proved

    bad: list[str] = []
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for row, error, proved in pool.map(check, rows):
            now = now_iso()
            meta = dict(json.loads(row["meta"] or "{}"), content_verified=proved)
            with catalog.transaction() as conn:
                if error is None:
                    transitions.prove(conn, row["id"], now, json.dumps(meta, sort_keys=True))
                    if row["kind"] == "history":
                        transitions.record_history(conn, meta)
                else:
                    state, _, reason = error.partition(":")
                    transitions.reset(conn, row["id"], state, now, reason)
                    bad.append(f"{row['kind']}/{row['name']}")
            done += 1
            tick(1)
    return done, bad
