"""`pgvault check`: every check driven into failure by a real condition and back to OK,
through the real CLI, against a real catalog file, spool, RabbitMQ and (archiver)
PostgreSQL. The JSON output is validated against docs/check.schema.json."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest

from pgvault.walfile import segment_name
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.monhelpers import (
    ago,
    archive_segments,
    by_key,
    insert_backup,
    insert_drill,
    insert_run,
    published,
    run_check,
    set_config,
    status,
    store_object_path,
)

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "check.schema.json").read_text())
CLOSED_PG = {"host": "127.0.0.1", "port": 9, "databases": ["appdb"]}


def validate(report: dict[str, object]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.fixture
def env(make_env: EnvFactory) -> PgvaultEnv:
    e = make_env("local", extra={"postgres": CLOSED_PG})
    e.cli("init")
    return e


def test_json_output_matches_the_documented_schema(env: PgvaultEnv) -> None:
    insert_backup(env, finished=ago(hours=30))
    report = run_check(env, "--no-alerts")
    validate(report)
    names = {c["name"] for c in report["checks"]}
    assert names == set(SCHEMA["$defs"]["check"]["properties"]["name"]["enum"])
    assert report["status"] == "CRITICAL" and report["exit_code"] == 2
    assert sum(report["counts"].values()) == len(report["checks"])
    assert report["alerts"] == {
        "enabled": False,
        "published": 0,
        "spooled": 0,
        "direct": 0,
        "direct_note": "",
    }
    archiver = by_key(report)[("archiver", "postgres")]
    assert archiver["status"] == "UNKNOWN" and "cannot connect" in archiver["message"]
    age = by_key(report)[("backup_age", "logical/appdb")]
    assert age["fingerprint"] == f"{env.cluster}:backup_age:logical/appdb"
    assert age["value"] > 29 * 3600 and age["threshold"] == 25 * 3600
    assert age["display_threshold"] == "25.0 h" and age["severity"] == "critical"
    # the schema is not a rubber stamp
    broken = dict(report, status="FINE")
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_exit_codes_and_nagios_line(env: PgvaultEnv) -> None:
    insert_backup(env, finished=ago(hours=1))
    set_config(env, "alerts", max_physical_age_hours=0)
    ok = env.cli("check", "--only", "backup_age", "--only", "disk", "--nagios", "--no-alerts")
    assert ok.returncode == 0
    assert ok.stdout.startswith("PGVAULT OK - 0 critical, 0 unknown, 0 warning, 3 ok | ")
    assert "'disk_spool'=" in ok.stdout and "%;80;;0;" in ok.stdout
    assert len(ok.stdout.strip().splitlines()) == 1
    warn = env.cli("check", "--only", "drills", "--nagios", "--no-alerts", check=False)
    assert warn.returncode == 1, warn.stdout
    assert warn.stdout.startswith("PGVAULT WARNING - ") and "WARNING drills pitr" in warn.stdout
    unknown = env.cli("check", "--only", "archiver", "--no-alerts", check=False)
    assert unknown.returncode == 3
    assert unknown.stdout.startswith("UNKNOWN  archiver") and len(unknown.stdout.splitlines()) == 1
    bad = env.cli("check", "--only", "nope", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("pgvault: error: unknown check 'nope'")


def test_backup_and_drill_checks_fail_on_old_rows_then_recover(env: PgvaultEnv) -> None:
    only = [
        "--only",
        "backup_age",
        "--only",
        "backup_size",
        "--only",
        "backup_duration",
        "--only",
        "backup_result",
        "--only",
        "drills",
    ]
    for days in range(8, 1, -1):  # a week of ~100 MB dumps, then one of 50 MB
        insert_backup(env, finished=ago(days=days, hours=6), size=100_000_000 + days * 1000)
    insert_backup(env, finished=ago(hours=30), size=50_000_000)
    insert_backup(env, kind="physical", db=None, finished=ago(days=9))
    insert_run(env, started=ago(hours=31), minutes=90)
    insert_run(env, kind="physical", target="cluster", started=ago(hours=2), minutes=5,
               result="failed", error="pg_basebackup: could not connect")  # fmt: skip
    insert_drill(env, kind="logical", finished=ago(days=10))
    insert_drill(env, kind="pitr", finished=ago(days=1), result="failed",
                 details={"error": "row count mismatch in orders"})  # fmt: skip
    report = run_check(env, *only)
    validate(report)
    assert status(report, "backup_age", "logical/appdb") == "CRITICAL"
    assert status(report, "backup_age", "physical") == "CRITICAL"
    size = by_key(report)[("backup_size", "logical/appdb")]
    assert size["status"] == "WARNING" and 49 < size["value"] < 51, size
    assert "smaller than the median of the previous 7" in size["message"]
    assert status(report, "backup_duration", "logical/appdb") == "WARNING"
    assert status(report, "backup_duration", "physical") == "OK"
    failed = by_key(report)[("backup_result", "physical")]
    assert failed["status"] == "CRITICAL" and "could not connect" in failed["message"]
    assert status(report, "drills", "logical") == "WARNING"
    pitr = by_key(report)[("drills", "pitr")]
    assert pitr["status"] == "CRITICAL" and "row count mismatch" in pitr["message"]
    assert report["exit_code"] == 2
    keys = {(e["severity"], e["check"], e["subject"]) for e in published(env)}
    assert ("critical", "backup_age", "logical/appdb") in keys
    assert ("warning", "backup_size", "logical/appdb") in keys
    assert ("critical", "drills", "pitr") in keys
    assert ("resolved", "backup_duration", "physical") in keys

    insert_backup(env, finished=ago(hours=2), size=100_000_500)
    insert_backup(env, kind="physical", db=None, finished=ago(days=1))
    insert_run(env, started=ago(hours=3), minutes=20)
    insert_run(env, kind="physical", target="cluster", started=ago(hours=1), minutes=30)
    insert_drill(env, kind="logical", finished=ago(hours=5))
    insert_drill(env, kind="pitr", finished=ago(hours=4))
    report = run_check(env, *only)
    assert report["status"] == "OK", [c for c in report["checks"] if c["status"] != "OK"]
    events = published(env)
    assert events and {e["severity"] for e in events} == {"resolved"}
    assert sorted(e["check"] for e in events) == sorted(c["name"] for c in report["checks"])


@pytest.mark.slow
def test_stopped_workers_leave_queues_deep_and_spool_unverified(env: PgvaultEnv) -> None:
    segs = [segment_name(1, n) for n in (1, 2)]
    archive_segments(env, segs)
    env.cli("producer", "--once")  # announced; no upload worker runs
    set_config(env, "alerts", max_upload_lag_minutes=0.01)
    time.sleep(1)
    report = run_check(env, "--only", "queues", "--only", "upload_lag", "--no-alerts")
    validate(report)
    upload = by_key(report)[("queues", "upload")]
    assert upload["status"] == "CRITICAL" and upload["value"] == 2
    assert "no worker consumes" in upload["message"]
    spool = by_key(report)[("upload_lag", "spool")]
    assert spool["status"] == "CRITICAL" and spool["details"]["unverified"] == 2
    assert status(report, "upload_lag", "wal") == "WARNING"  # nothing verified yet

    env.drain()
    set_config(env, "postgres", archive_timeout=1)  # RPO bound 2 s
    time.sleep(2.5)
    report = run_check(env, "--only", "upload_lag", "--no-alerts")
    assert status(report, "upload_lag", "spool") == "OK"
    rpo = by_key(report)[("upload_lag", "wal")]
    assert rpo["status"] == "CRITICAL" and rpo["details"]["newest_verified"] == segs[-1]
    set_config(env, "postgres", archive_timeout=300)
    assert status(run_check(env, "--only", "upload_lag"), "upload_lag", "wal") == "OK"

    env.start_pipeline()  # every stage gets a consumer

    def queues_ok() -> bool:
        return run_check(env, "--only", "queues", "--no-alerts")["status"] == "OK"

    env.wait_for(queues_ok, 60, "queues check OK with workers attached")


@pytest.mark.slow
def test_deleted_wal_object_is_a_gap_until_it_is_back(env: PgvaultEnv) -> None:
    segs = [segment_name(1, n) for n in (1, 2, 3)]
    archive_segments(env, segs)
    env.drain()
    assert status(run_check(env, "--only", "wal_gaps"), "wal_gaps", "wal") == "OK"
    victim = store_object_path(env, f"pg/{env.cluster}/wal/00000001/{segs[1]}.zst")
    aside = env.base / "aside.zst"
    victim.rename(aside)
    for leftover in (env.spool / "wal").glob(f"{segs[1]}*"):  # no spool copy to re-upload
        leftover.unlink()
    env.cli("catalog", "verify", "--kind", "wal")
    env.drain()
    report = run_check(env, "--only", "wal_gaps")
    gap = by_key(report)[("wal_gaps", "wal")]
    assert gap["status"] == "CRITICAL" and gap["value"] == 1, gap
    assert gap["details"]["gaps"][0]["names"] == [segs[1]]
    assert report["exit_code"] == 2
    assert any(e["check"] == "wal_gaps" and e["severity"] == "critical" for e in published(env))
    aside.rename(victim)
    env.cli("catalog", "verify", "--kind", "wal")
    env.drain()
    assert status(run_check(env, "--only", "wal_gaps"), "wal_gaps", "wal") == "OK"


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def test_disk_check_on_a_filling_filesystem(env: PgvaultEnv) -> None:
    mnt = env.base / "spoolfs"
    _mount_tmpfs(mnt, "size=8m")
    try:
        for sub in ("wal", "logical", "physical", "alerts", "tmp"):
            (mnt / sub).mkdir()
        set_config(env, spool_dir=str(mnt))
        assert status(run_check(env, "--only", "disk"), "disk", "spool") == "OK"
        filler = mnt / "tmp" / "filler"
        filler.write_bytes(b"\0" * (7 * 1024 * 1024))
        report = run_check(env, "--only", "disk")
        disk = by_key(report)[("disk", "spool")]
        assert disk["status"] == "WARNING" and 80 < disk["value"] < 95, disk
        with filler.open("ab") as fh:
            fh.write(b"\0" * (900 * 1024))
        assert status(run_check(env, "--only", "disk"), "disk", "spool") == "CRITICAL"
        filler.unlink()
        assert status(run_check(env, "--only", "disk"), "disk", "spool") == "OK"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_store_check_fails_on_a_read_only_store(env: PgvaultEnv) -> None:
    mnt = env.base / "storefs"
    _mount_tmpfs(mnt, "size=4m")
    try:
        set_config(env, "storage", path=str(mnt))
        assert status(run_check(env, "--only", "store"), "store", "store") == "OK"
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        report = run_check(env, "--only", "store")
        store = by_key(report)[("store", "store")]
        assert store["status"] == "CRITICAL" and "canary" in store["message"], store
        assert report["exit_code"] == 2
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert status(run_check(env, "--only", "store"), "store", "store") == "OK"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.slow
def test_archiver_check_sees_a_failing_archive_command(env: PgvaultEnv) -> None:
    pg = env.make_pg(extra={"archive_timeout": "60"})
    set_config(env, "postgres", host="127.0.0.1", port=pg.port, user="postgres")
    pg.wait_archived(pg.switch_wal())
    report = run_check(env, "--only", "archiver")
    validate(report)
    assert status(report, "archiver", "postgres") == "OK", report

    pg.sql("ALTER SYSTEM SET archive_command = '/bin/false'")
    pg.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    failing = pg.switch_wal()
    deadline = time.monotonic() + 30
    while not pg.one("SELECT failed_count FROM pg_stat_archiver") and time.monotonic() < deadline:
        time.sleep(0.2)
    report = run_check(env, "--only", "archiver")
    arch = by_key(report)[("archiver", "postgres")]
    assert arch["status"] == "CRITICAL", arch
    assert "archive_command failing" in arch["message"] and failing in arch["message"]
    assert arch["value"] >= 1 and arch["details"]["last_failed_wal"] == failing

    seen = arch["details"]["failed_count"]  # more failures after this check, then recovery
    pg.switch_wal()  # wakes the archiver, which tries (and fails) again
    deadline = time.monotonic() + 30
    while pg.one("SELECT failed_count FROM pg_stat_archiver") <= seen:
        assert time.monotonic() < deadline, "archiver did not retry"
        time.sleep(0.2)
    command = env.archive_command().replace("%", "%%")  # psycopg placeholders
    pg.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    pg.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    pg.wait_archived(pg.switch_wal(), 90)
    recovered = by_key(run_check(env, "--only", "archiver"))[("archiver", "postgres")]
    assert recovered["status"] == "WARNING", recovered  # failures rose since the last check
    assert "recovered" in recovered["message"]
    assert status(run_check(env, "--only", "archiver"), "archiver", "postgres") == "OK"

    pg.sql("ALTER SYSTEM SET archive_timeout = 0")
    pg.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    loose = by_key(run_check(env, "--only", "archiver"))[("archiver", "postgres")]
    assert loose["status"] == "WARNING" and "archive_timeout is 0 s" in loose["message"]

    # RPO with the server's view: an idle server whose archived WAL is all verified is
    # fine however old the newest segment; a newer archived, unverified one is not
    env.drain()
    set_config(env, "postgres", archive_timeout=1)  # RPO bound 2 s
    time.sleep(2.5)
    rpo = by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "wal")]
    assert rpo["status"] == "OK", rpo
    assert "every segment PostgreSQL archived is verified" in rpo["message"]
    pg.wait_archived(pg.switch_wal())
    rpo = by_key(run_check(env, "--only", "upload_lag", "--no-alerts"))[("upload_lag", "wal")]
    assert rpo["status"] == "CRITICAL", rpo
