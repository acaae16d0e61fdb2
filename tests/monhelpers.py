"""Helpers for the monitoring tests: backup/run/drill rows in a real catalog file (what
the logical and physical backup code records), synthetic WAL through the real CLI, and
reading `check --json`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgvault.catalog.runs import record_backup_run, record_drill
from pgvault.timeutil import iso
from tests.env import PgvaultEnv
from tests.walgen import write_segment


def ago(**kw: float) -> datetime:
    return datetime.now(UTC) - timedelta(**kw)


def insert_backup(
    env: PgvaultEnv,
    *,
    kind: str = "logical",
    db: str | None = "appdb",
    finished: datetime,
    size: int = 100_000_000,
    state: str = "verified",
) -> str:
    backup_id = finished.strftime("%Y%m%dT%H%M%SZ") + uuid.uuid4().hex[:4]
    name = f"{db}/{backup_id}" if kind == "logical" else backup_id
    cat = env.catalog()
    try:
        with cat.transaction() as conn:
            conn.execute(
                "INSERT INTO artifacts(kind, name, state, state_at, db, backup_id, started_at, "
                "finished_at, size, created_at, verified_at, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    name,
                    state,
                    iso(finished),
                    db if kind == "logical" else None,
                    backup_id,
                    iso(finished - timedelta(minutes=5)),
                    iso(finished),
                    size,
                    iso(finished),
                    iso(finished) if state == "verified" else None,
                    uuid.uuid4().hex * 2,
                ),
            )
    finally:
        cat.close()
    return name


def insert_run(
    env: PgvaultEnv,
    *,
    kind: str = "logical",
    target: str = "appdb",
    started: datetime,
    minutes: float,
    result: str = "ok",
    error: str | None = None,
) -> None:
    cat = env.catalog()
    try:
        record_backup_run(
            cat,
            kind=kind,
            target=target,
            started_at=started,
            finished_at=started + timedelta(minutes=minutes),
            result=result,
            error=error,
        )
    finally:
        cat.close()


def insert_drill(
    env: PgvaultEnv,
    *,
    kind: str,
    finished: datetime,
    result: str = "ok",
    target: str = "appdb",
    details: dict[str, Any] | None = None,
) -> None:
    cat = env.catalog()
    try:
        record_drill(
            cat,
            kind=kind,
            target=target,
            backup="b1",
            started_at=finished - timedelta(minutes=3),
            finished_at=finished,
            result=result,
            details=details or {},
        )
    finally:
        cat.close()


def archive_segments(env: PgvaultEnv, names: list[str]) -> None:
    """Synthetic WAL segments into the spool through the real `wal-archive`."""
    src = env.base / "pg_wal_src"
    src.mkdir(exist_ok=True)
    for name in names:
        path = write_segment(src, name)
        env.cli("wal-archive", str(path), name)


def run_check(
    env: PgvaultEnv, *args: str, env_vars: dict[str, str] | None = None
) -> dict[str, Any]:
    """`pgvault check --json ARGS`; asserts the exit code matches the reported status."""
    proc = env.cli("check", "--json", *args, check=False, env=env_vars)
    assert proc.returncode in (0, 1, 2, 3), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["exit_code"] == proc.returncode, (report, proc.stderr)
    return report


def by_key(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["name"], c["subject"]): c for c in report["checks"]}


def status(report: dict[str, Any], name: str, subject: str) -> str:
    found = by_key(report).get((name, subject))
    assert found is not None, f"no result {name}/{subject} in {sorted(by_key(report))}"
    return str(found["status"])


def published(env: PgvaultEnv) -> list[dict[str, Any]]:
    """Alert events waiting in the alert queue (taken off it)."""
    broker = env.broker()
    try:
        return [json.loads(d.body) for d in broker.take(broker.topology.queue("alert"), 500)]
    finally:
        broker.close()


def set_config(env: PgvaultEnv, section: str | None = None, **values: Any) -> None:
    target = env.data.setdefault(section, {}) if section else env.data
    target.update(values)
    env.write_config()


def store_object_path(env: PgvaultEnv, key: str) -> Path:
    return Path(env.data["storage"]["path"]) / key
