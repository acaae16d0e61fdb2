"""`catalog restorable` stays an index lookup at hundreds of thousands of segments."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog.restorable import restorable_at, windows
from tests.synthetic import big_catalog

SEGMENTS = 200_000


def test_restorable_uses_indexes_and_answers_fast(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cat = big_catalog(tmp_path / "big.sqlite", SEGMENTS, start=start)
    traced: list[str] = []
    cat.conn.set_trace_callback(traced.append)
    target = start + timedelta(minutes=5 * (SEGMENTS - 3000))
    began = time.perf_counter()
    answer = restorable_at(cat, target)
    elapsed = time.perf_counter() - began
    cat.conn.set_trace_callback(None)
    assert answer.plan is not None
    assert answer.plan.segments < 2100  # from the newest weekly backup before T, not from B0
    assert elapsed < 1.0, f"restorable_at took {elapsed:.3f}s"
    # no statement it ran scans the table or the WAL index; scanning the small partial
    # indexes of backups (artifacts_physical / artifacts_logical) is fine
    for sql in {s for s in traced if "artifacts" in s and s.lstrip().upper().startswith("SELECT")}:
        for row in cat.conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
            detail = str(row[-1])
            if detail.startswith("SCAN"):
                assert "artifacts_physical" in detail or "artifacts_logical" in detail, (
                    sql,
                    detail,
                )
    began = time.perf_counter()
    ws = windows(cat)
    assert len(ws) > 20 and all(w.usable for w in ws)
    assert time.perf_counter() - began < 2.0
