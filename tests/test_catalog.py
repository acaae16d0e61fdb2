"""Catalog state machine and WAL chain bookkeeping (real SQLite files, no broker)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from pgvault.catalog.artifacts import apply_event
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.wal import chain, runs
from pgvault.errors import CatalogError
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.walfile import segment_name

SHA_A = "a" * 64
SHA_B = "b" * 64


def seg_event(
    segno: int, state: str, *, tli: int = 1, sha: str = SHA_A, **kw: object
) -> ArtifactEvent:
    name = segment_name(tli, segno)
    stored = state != "ready"
    f = FileInfo(
        name=name,
        size=16 << 20,
        sha256=sha,
        key=f"pg/c/wal/{tli:08X}/{name}.zst" if stored else None,
        stored_size=100 if stored else None,
        stored_sha256=SHA_B if stored else None,
    )
    meta = {
        "wal_type": "segment",
        "timeline": tli,
        "segno": segno,
        "seg_size": 16 << 20,
        "start_lsn": segno << 24,
        "end_lsn": (segno + 1) << 24,
    }
    return ArtifactEvent(
        cluster="c", kind="wal", state=state, name=name, files=(f,), meta=meta, **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def cat(tmp_path: Path) -> CatalogDB:
    return CatalogDB(tmp_path / "catalog.sqlite", "c")


def row(cat: CatalogDB, segno: int, tli: int = 1) -> dict[str, object]:
    return cat.query("SELECT * FROM artifacts WHERE name=?", (segment_name(tli, segno),))[0]


def test_states_advance_and_repeats_change_nothing(cat: CatalogDB) -> None:
    ready, stored, verified = (seg_event(5, s) for s in ("ready", "stored", "verified"))
    assert apply_event(cat, ready).action == "inserted"
    assert apply_event(cat, ready).action == "ignored"
    assert apply_event(cat, stored).action == "advanced"
    assert apply_event(cat, verified).action == "advanced"
    assert apply_event(cat, stored).action == "ignored"  # late redelivery
    r = row(cat, 5)
    assert r["state"] == "verified" and r["verified_at"] and r["stored_size"] == 100
    assert cat.scalar("SELECT COUNT(*) FROM artifacts") == 1
    assert runs(cat.conn, 1) == [(5, 5)]


def test_out_of_order_events_end_in_the_latest_state(cat: CatalogDB) -> None:
    apply_event(cat, seg_event(7, "verified"))
    apply_event(cat, seg_event(7, "ready"))
    apply_event(cat, seg_event(7, "stored"))
    assert row(cat, 7)["state"] == "verified"
    assert runs(cat.conn, 1) == [(7, 7)]


def test_corrupt_then_reupload_then_verified(cat: CatalogDB) -> None:
    verified = seg_event(3, "verified")
    apply_event(cat, verified)
    corrupt = verified.evolve(state="corrupt", error="sha mismatch")
    assert apply_event(cat, corrupt).action == "reset"
    r = row(cat, 3)
    assert r["state"] == "corrupt" and r["error"] == "sha mismatch"
    assert runs(cat.conn, 1) == []
    # an older verified event (redelivered) must not hide the corruption
    assert apply_event(cat, verified).action == "ignored"
    assert row(cat, 3)["state"] == "corrupt"
    stored = corrupt.evolve(state="stored", error=None)
    assert apply_event(cat, stored).action == "advanced"
    assert apply_event(cat, stored.evolve(state="verified")).action == "advanced"
    assert row(cat, 3)["state"] == "verified" and row(cat, 3)["error"] is None
    assert runs(cat.conn, 1) == [(3, 3)]


def test_stale_corrupt_event_does_not_override_newer_verification(cat: CatalogDB) -> None:
    old = seg_event(4, "stored")
    corrupt = old.evolve(state="corrupt")
    newer = corrupt.model_copy(update={"created_at": corrupt.created_at - timedelta(hours=1)})
    apply_event(cat, seg_event(4, "verified"))
    assert apply_event(cat, newer).action == "ignored"
    assert row(cat, 4)["state"] == "verified"


def test_same_name_other_sha_is_a_conflict(cat: CatalogDB) -> None:
    apply_event(cat, seg_event(9, "verified"))
    outcome = apply_event(cat, seg_event(9, "stored", sha=SHA_B))
    assert outcome.action == "conflict"
    assert row(cat, 9)["sha256"] == SHA_A


def test_catalog_of_another_cluster_is_refused(tmp_path: Path) -> None:
    CatalogDB(tmp_path / "c.sqlite", "one").close()
    with pytest.raises(CatalogError, match="belongs to cluster 'one'"):
        CatalogDB(tmp_path / "c.sqlite", "two")


def test_missing_catalog_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog rebuild"):
        CatalogDB(tmp_path / "absent.sqlite", "c", create=False)


def test_runs_match_brute_force_under_random_churn(cat: CatalogDB) -> None:
    rng = random.Random(42)
    verified: set[int] = set()
    events = {}
    for step in range(600):
        segno = rng.randrange(0, 60)
        if segno not in events:
            events[segno] = seg_event(segno, "verified")
            apply_event(cat, events[segno])
            verified.add(segno)
        elif segno in verified and rng.random() < 0.5:
            events[segno] = events[segno].evolve(state="missing")
            apply_event(cat, events[segno])
            verified.discard(segno)
        elif segno not in verified:
            events[segno] = events[segno].evolve(state="stored")
            apply_event(cat, events[segno])
            events[segno] = events[segno].evolve(state="verified")
            apply_event(cat, events[segno])
            verified.add(segno)
        if step % 50 == 0 or step == 599:
            expected = []
            for s in sorted(verified):
                if expected and expected[-1][1] == s - 1:
                    expected[-1] = (expected[-1][0], s)
                else:
                    expected.append((s, s))
            assert runs(cat.conn, 1) == expected


def test_gaps_distinguish_absent_missing_and_pending(cat: CatalogDB) -> None:
    for s in (1, 2, 3, 6, 7):
        apply_event(cat, seg_event(s, "verified"))
    apply_event(cat, seg_event(8, "verified").evolve(state="missing"))
    apply_event(cat, seg_event(9, "verified"))
    apply_event(cat, seg_event(10, "stored"))  # in flight at the tail: pending, not a gap
    ch = chain(cat.conn, 1)
    assert (ch.first_segno, ch.last_segno, ch.verified) == (1, 10, 6)
    gaps = ch.gaps
    assert [(g.first_segno, g.last_segno, g.absent, g.missing) for g in gaps] == [
        (4, 5, 2, 0),
        (8, 8, 0, 1),
    ]
    assert gaps[0].names == [segment_name(1, 4), segment_name(1, 5)]
    assert [h.pending for h in ch.holes if not h.is_gap] == [1]


def test_timelines_are_separate_chains(cat: CatalogDB) -> None:
    for s in (1, 2):
        apply_event(cat, seg_event(s, "verified"))
    for s in (2, 4):
        apply_event(cat, seg_event(s, "verified", tli=2))
    assert runs(cat.conn, 1) == [(1, 2)]
    assert [(g.first_segno, g.last_segno) for g in chain(cat.conn, 2).gaps] == [(3, 3)]
