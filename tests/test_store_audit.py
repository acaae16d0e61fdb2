"""The scheduled store audit (issue 15 §2) and lag by position (§3), through the real CLI:
moto's S3 server and the local store, real PostgreSQL where WAL is needed, real RabbitMQ."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgvault.broker.auth import create_key_file
from pgvault.walfile import parse_name, segment_name
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.monhelpers import archive_segments, by_key, run_check, set_config
from tests.synthetic import wal_rows
from tests.test_pitr import prepare


def _audit(env: PgvaultEnv, *args: str, code: int = 0) -> dict[str, Any]:
    proc = env.cli("catalog", "audit", *args, "--json", check=False)
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout))


def _state(env: PgvaultEnv, kind: str, name: str) -> str:
    cat = env.catalog()
    try:
        return str(cat.scalar("SELECT state FROM artifacts WHERE kind=? AND name=?", (kind, name)))
    finally:
        cat.close()


def test_audit_marks_lost_and_damaged_objects_and_heals_from_the_spool(
    make_env: EnvFactory,
) -> None:
    env = make_env("s3")
    pg = prepare(env)
    env.cli("backup", "physical")
    names = []
    for i in range(3):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"audit {i}",))
        names.append(pg.switch_wal())
    pg.wait_archived(names[-1])
    env.drain()
    summary = env.cli_json("catalog", "restorable")
    (window,) = summary["backups"]
    backup_id = window["backup_id"]
    assert env.cli_json("catalog", "gaps")["gap_count"] == 0
    assert _audit(env)["result"] == "ok"  # a clean store: nothing found, a cycle proved

    store = env.store()
    root = f"pg/{env.cluster}"
    # the base backup is lost from the store and from the spool; one WAL object deleted
    # and one corrupted while the spool still holds both
    store.delete(f"{root}/physical/{backup_id}/base.tar.zst")
    shutil.rmtree(env.spool / "physical" / backup_id)
    lost, damaged = names[0], names[1]
    store.delete(f"{root}/wal/00000001/{lost}.zst")
    key = f"{root}/wal/00000001/{damaged}.zst"
    info = store.head(key)
    assert info is not None
    store.put_bytes(key, b"not what was uploaded", dict(info.metadata))

    report = _audit(env, "--new-cycle", code=1)
    assert f"physical/{backup_id}" in report["missing"]
    assert f"wal/{lost}" in report["missing"]
    assert report["corrupt"] == [f"wal/{damaged}"]
    assert sorted(report["reuploads"]) == sorted([f"wal/{lost}", f"wal/{damaged}"])
    assert f"physical/{backup_id}" in report["alerted"]
    assert report["listing"]["complete"] and report["listing"]["listed"] > 0
    # the catalog reflects it at once
    assert _state(env, "physical", backup_id) == "missing"
    assert env.cli_json("catalog", "restorable", ok_codes=(0, 1))["backups"] == []
    gaps = env.cli_json("catalog", "gaps", ok_codes=(1,))
    assert gaps["gap_count"] >= 1
    listed = [n for t in gaps["timelines"] for g in t["gaps"] for n in g["names"]]
    assert lost in listed and damaged in listed
    check = by_key(run_check(env, "--only", "store_audit", "--no-alerts"))
    assert check[("store_audit", "listing")]["status"] == "CRITICAL"
    alerts = [json.loads(m.body) for m in env.broker().take(env.broker().topology.queue("alert"))]
    assert {a["subject"] for a in alerts if a["check"] == "artifact_missing"} >= {
        f"physical/{backup_id}",
        f"wal/{lost}",
    }

    env.drain()  # the re-uploads are stored and verified again
    assert _state(env, "wal", lost) == "verified" and _state(env, "wal", damaged) == "verified"
    assert env.cli_json("catalog", "gaps")["gap_count"] == 0
    assert _state(env, "physical", backup_id) == "missing"  # no copy left: stays lost
    again = _audit(env, "--new-cycle", code=0)
    assert again["missing"] == [] and again["corrupt"] == []
    assert again["readback"]["cycle_complete"] is True


def test_rolling_readback_respects_its_budget_and_resumes(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.cli("init")
    segs = [segment_name(1, n) for n in range(1, 7)]
    archive_segments(env, segs)
    env.drain()
    cat = env.catalog()
    sizes = {
        r["name"]: int(r["stored_size"])
        for r in cat.query("SELECT name, stored_size FROM artifacts WHERE kind='wal'")
    }
    cat.close()
    assert len(sizes) == 6
    budget = max(sizes.values()) * 2
    first = _audit(env, "--no-listing", "--budget", str(budget))
    assert 1 <= first["readback"]["objects_read"] <= 2
    assert first["readback"]["bytes_read"] <= budget
    assert first["readback"]["cycle_complete"] is False
    cat = env.catalog()
    checked = cat.query("SELECT name, checked_at FROM artifacts WHERE kind='wal' ORDER BY name")
    cycle_start = cat.scalar("SELECT started_at FROM audit_cycles")
    cat.close()
    seen = [r["name"] for r in checked if r["checked_at"] >= cycle_start]
    assert seen == segs[-len(seen) :]  # newest first
    runs = 1
    while True:
        report = _audit(env, "--no-listing", "--budget", str(budget))
        runs += 1
        assert report["readback"]["bytes_read"] <= budget
        assert report["readback"]["cycle_id"] == first["readback"]["cycle_id"]  # resumed
        if report["readback"]["cycle_complete"]:
            break
        assert runs < 6
    assert runs >= 3  # six objects, at most two per run
    cat = env.catalog()
    assert all(
        r["checked_at"] >= cycle_start
        for r in cat.query("SELECT checked_at FROM artifacts WHERE kind='wal'")
    )
    (cycle,) = cat.query("SELECT * FROM audit_cycles")
    assert cycle["completed_at"] and cycle["objects_read"] == 6
    assert cycle["bytes_read"] == sum(sizes.values())
    runs_rows = cat.query("SELECT * FROM audit_runs ORDER BY id")
    cat.close()
    assert len(runs_rows) == runs and runs_rows[-1]["cycle_complete"] == 1
    # the next cycle is not due before [audit] cycle_days
    idle = _audit(env, "--no-listing")
    assert idle["readback"]["cycle_id"] is None and idle["readback"]["objects_read"] == 0
    _audit(env)  # a listing, so both halves of the check have something
    results = by_key(run_check(env, "--only", "store_audit", "--no-alerts"))
    assert results[("store_audit", "listing")]["status"] == "OK"
    assert results[("store_audit", "readback")]["status"] == "OK"
    set_config(env, "audit", max_cycle_age_days=0.00001)
    time.sleep(1.5)
    stale = by_key(run_check(env, "--only", "store_audit", "--no-alerts"))
    assert stale[("store_audit", "readback")]["status"] == "CRITICAL"


def test_never_audited_is_a_warning(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.cli("init")
    results = by_key(run_check(env, "--only", "store_audit", "--no-alerts"))
    assert results[("store_audit", "listing")]["status"] == "WARNING"
    assert results[("store_audit", "readback")]["status"] == "WARNING"


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_store_times_out_and_the_wal_lag_warns_in_minutes(
    make_env: EnvFactory, hung_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # credentials of its own: the store must be reached (and hang), not refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hung")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hung")
    storage = {
        "type": "s3",
        "endpoint_url": hung_endpoint,
        "bucket": "hung",
        "prefix": "pg",
        "region": "us-east-1",
        "path_style": True,
        "connect_timeout": 1,
        "read_timeout": 2,
        "max_attempts": 1,
    }
    env = make_env(
        "local", extra={"storage": storage, "postgres": {"host": "127.0.0.1", "port": 9}}
    )
    env.data["storage"] = storage
    env.write_config()
    # what `pgvault init` would do, without its store canary (this store never answers)
    create_key_file(env.settings.hmac_key_path, env.cluster)
    seg = segment_name(1, 1)
    archive_segments(env, [seg])
    env.cli("producer", "--once")
    started = time.monotonic()
    upload = env.cli("worker", "upload", "--once", "--json", check=False, timeout=60)
    assert time.monotonic() - started < 30, "the upload hung on the store"
    assert upload.returncode == 0, upload.stderr
    started = time.monotonic()
    audit = env.cli("catalog", "audit", check=False, timeout=60)
    assert time.monotonic() - started < 30
    assert audit.returncode == 1 and "did not answer in time" in audit.stderr, audit.stderr
    store = by_key(run_check(env, "--only", "store", "--no-alerts"))[("store", "store")]
    assert store["status"] == "CRITICAL" and "did not answer in time" in store["message"]
    # lag thresholds in minutes (here 1.5 s / 1 h): a warning, not an hour of green
    set_config(env, "alerts", wal_lag_warning_minutes=0.025, wal_lag_critical_minutes=60)
    time.sleep(2)
    lag = by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "spool")]
    assert lag["status"] == "WARNING" and lag["details"]["unverified_wal"] == 1, lag
    set_config(env, "alerts", wal_lag_critical_minutes=0.03)
    lag = by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "spool")]
    assert lag["status"] == "CRITICAL"


def test_rpo_counts_unverified_segments_behind_a_stray_row(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    names = [pg.switch_wal() for _ in range(1)]
    pg.wait_archived(names[-1])
    env.drain()
    assert (
        by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "wal")][
            "status"
        ]
        == "OK"
    )
    # the pipeline stops (nothing drained) while PostgreSQL archives on; one stray
    # verified row lies far ahead of the real chain
    behind = []
    for i in range(4):
        pg.sql("SELECT pg_logical_emit_message(false, 'x', %s)", (str(i),))
        behind.append(pg.switch_wal())
    pg.wait_archived(behind[-1])
    last = parse_name(behind[-1])
    cat = env.catalog()
    wal_rows(cat, 1, last.segno() + 100, 1, datetime.now(UTC), timedelta(minutes=1))
    cat.close()
    set_config(env, "alerts", wal_lag_warning_minutes=0.01)
    time.sleep(1)
    rpo = by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "wal")]
    assert rpo["status"] == "WARNING", rpo
    assert rpo["details"]["unverified_archived"] == len(behind)
    assert rpo["details"]["first_unverified"] == behind[0]
    assert f"{len(behind)} archived WAL segment(s) not verified" in rpo["message"]
