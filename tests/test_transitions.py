"""Property: whatever sequence of transitions the catalog goes through, `wal_runs` equals
what is recomputed from scratch from `artifacts` (real SQLite, no broker)."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgvault.catalog import transitions
from pgvault.catalog.artifacts import apply_event
from pgvault.catalog.db import ARTIFACT_COLUMNS, CatalogDB
from pgvault.catalog.wal import chain, timelines_with_segments
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.timeutil import iso
from pgvault.walfile import segment_name

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "a" * 64
STATES = ("ready", "stored", "verified", "corrupt", "missing")
# segment numbers with holes (never 3, 7, 15..17), on three timelines
SEGNOS = st.sampled_from([0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 18, 19, 20])
TIMELINES = st.sampled_from([1, 2, 3])


def _event(tli: int, segno: int, state: str, second: int) -> ArtifactEvent:
    name = segment_name(tli, segno)
    stored = state != "ready"
    f = FileInfo(
        name=name,
        size=16 << 20,
        sha256=SHA,
        key=f"pg/c/wal/{tli:08X}/{name}.zst" if stored else None,
        stored_size=100 if stored else None,
    )
    meta = {"wal_type": "segment", "timeline": tli, "segno": segno, "seg_size": 16 << 20}
    return ArtifactEvent(
        cluster="c",
        kind="wal",
        state=state,  # type: ignore[arg-type]
        name=name,
        files=(f,),
        meta=meta,
        created_at=BASE + timedelta(seconds=second),
        error="read-back failed" if state in ("corrupt", "missing") else None,
    )


# one step: (operation, timeline, segno, state, second)
STEP = st.tuples(
    st.sampled_from(
        [
            "event",
            "event",
            "event",
            "expire",
            "spare",
            "delete",
            "prove",
            "fail",
            "rebuild",
            "refresh",
        ]
    ),
    TIMELINES,
    SEGNOS,
    st.sampled_from(STATES),
    st.integers(min_value=0, max_value=50),
)


def _row_id(conn_cat: CatalogDB, tli: int, segno: int) -> int | None:
    rows = conn_cat.query(
        "SELECT id FROM artifacts WHERE kind='wal' AND name=?", (segment_name(tli, segno),)
    )
    return int(rows[0]["id"]) if rows else None


def _apply(cat: CatalogDB, step: tuple[str, int, int, str, int]) -> None:
    op, tli, segno, state, second = step
    if op == "event":
        apply_event(cat, _event(tli, segno, state, second))
        return
    artifact_id = _row_id(cat, tli, segno)
    at = iso(BASE + timedelta(seconds=second))
    with cat.transaction() as conn:
        if artifact_id is None:
            if op == "rebuild":  # a rebuild finding an object the catalog did not know
                values = {c: None for c in ARTIFACT_COLUMNS} | {
                    "kind": "wal",
                    "name": segment_name(tli, segno),
                    "state": "verified" if state == "verified" else "stored",
                    "state_at": at,
                    "created_at": at,
                    "timeline": tli,
                    "segno": segno,
                    "files": "[]",
                    "meta": "{}",
                }
                transitions.insert(conn, values)
            return
        if op == "expire":
            transitions.mark_expiring(conn, artifact_id, at)
        elif op == "spare":
            transitions.clear_expiring(conn, artifact_id)
        elif op == "delete":
            transitions.mark_expiring(conn, artifact_id, at)
            transitions.mark_deleted(conn, artifact_id, at)
        elif op == "prove":
            transitions.prove(conn, artifact_id, at, json.dumps({"content_verified": True}))
        elif op == "fail":
            transitions.reset(conn, artifact_id, "missing" if second % 2 else "corrupt", at, "x")
        elif op == "refresh":
            transitions.refresh_check(conn, artifact_id, at, "{}")
        else:  # rebuild: the row rewritten whole, retention's marks kept
            new_state = "verified" if state == "verified" else "stored"
            transitions.replace(conn, artifact_id, {"state": new_state, "state_at": at})


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(STEP, min_size=1, max_size=60))
def test_wal_runs_always_equal_the_runs_recomputed_from_artifacts(
    steps: list[tuple[str, int, int, str, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cat = CatalogDB(Path(tmp) / "catalog.sqlite", "c")
        for i, step in enumerate(steps):
            _apply(cat, step)
            mismatches = transitions.chain_mismatches(cat.conn)
            assert mismatches == [], f"after step {i} {step}: {mismatches}"
        # the gap report built on wal_runs agrees with the rows too
        for tli in timelines_with_segments(cat.conn):
            c = chain(cat.conn, tli)
            expected = transitions.recompute_runs(cat.conn).get(tli, [])
            assert c.verified == sum(z - a + 1 for a, z in expected)
        cat.close()


def test_recompute_detects_a_drifted_chain(tmp_path: Path) -> None:
    """The checker itself is not vacuous: a wal_runs row written behind its back shows."""
    cat = CatalogDB(tmp_path / "catalog.sqlite", "c")
    for segno in (1, 2, 3):
        apply_event(cat, _event(1, segno, "verified", segno))
    assert transitions.chain_mismatches(cat.conn) == []
    cat.conn.execute("DELETE FROM wal_runs")
    (m,) = transitions.chain_mismatches(cat.conn)
    assert (m.timeline, m.stored, m.recomputed) == (1, [], [(1, 3)])


def test_expiring_segment_stays_off_the_chain_when_verified_later(tmp_path: Path) -> None:
    """A segment retention is deleting does not rejoin the chain on a late verified event."""
    cat = CatalogDB(tmp_path / "catalog.sqlite", "c")
    apply_event(cat, _event(1, 5, "stored", 1))
    artifact_id = _row_id(cat, 1, 5)
    assert artifact_id is not None
    with cat.transaction() as conn:
        transitions.mark_expiring(conn, artifact_id, iso(BASE))
    apply_event(cat, _event(1, 5, "verified", 2))
    assert cat.query("SELECT * FROM wal_runs") == []
    assert transitions.chain_mismatches(cat.conn) == []
