"""Reading catalogued objects back outside the pipeline: `catalog rebuild --verify` and the
rolling read-back of the store audit (catalog/audit.py) share `read_files` (prove one
artifact's stored files) and record the outcome through catalog/transitions.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.schemas import FileInfo
from pgvault.storage import ObjectStore
from pgvault.timeutil import now_iso


@dataclass(frozen=True, slots=True)
class Readback:
    """One artifact read back: `state` None when every file was proved, else
    "missing" / "corrupt" with the reason. `proved`: the content (not only the stored
    bytes) was proved. `superseded`: a newer upload of the same content replaced it."""

    state: str | None
    error: str | None = None
    proved: bool = False
    bytes_read: int = 0
    superseded: bool = False


def read_files(store: ObjectStore, files: Sequence[Any], identities: Sequence[Any]) -> Readback:
    """Read back and prove every stored file of one artifact (storage.verified)."""
    from pgvault.errors import IntegrityError, ObjectMissing, Superseded
    from pgvault.storage.verified import read_back

    proved = True
    read = 0
    try:
        for f in files:
            stored, content = read_back(store, FileInfo.model_validate(f), identities)
            read += stored.size
            proved = proved and content is not None
    except ObjectMissing as exc:
        return Readback("missing", str(exc), bytes_read=read)
    except Superseded as exc:
        return Readback("corrupt", str(exc), bytes_read=read, superseded=True)
    except IntegrityError as exc:
        return Readback("corrupt", str(exc), bytes_read=read)
    return Readback(None, proved=proved, bytes_read=read)


def proved_meta(meta_json: str | None, result: Readback) -> str:
    meta = dict(json.loads(meta_json or "{}"), content_verified=result.proved)
    return json.dumps(meta, sort_keys=True)


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
    where = "state IN ('stored', 'verified')" if everything else "state = 'stored'"
    rows = catalog.query(
        f"SELECT id, kind, name, timeline, segno, files, meta FROM artifacts "  # noqa: S608
        f"WHERE deleted_at IS NULL AND expiring_at IS NULL AND {where}"
    )

    def check(row: dict[str, Any]) -> tuple[dict[str, Any], Readback]:
        return row, read_files(store, json.loads(row["files"]), identities)

    bad: list[str] = []
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for row, result in pool.map(check, rows):
            now = now_iso()
            with catalog.transaction() as conn:
                if result.state is None:
                    meta = proved_meta(row["meta"], result)
                    transitions.prove(conn, row["id"], now, meta)
                    if row["kind"] == "history":
                        transitions.record_history(conn, json.loads(meta))
                else:
                    transitions.reset(conn, row["id"], result.state, now, result.error)
                    bad.append(f"{row['kind']}/{row['name']}")
            done += 1
            tick(1)
    return done, bad
