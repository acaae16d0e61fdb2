"""One `--json` family (docs/JSON.md): every object has `cluster` and `ok`, LSNs are "X/Y"
strings; each command's output validated against a JSON schema. Also the text of
`retention apply --dry-run` (one line per kind) and command-line times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from pgvault.catalog.db import CatalogDB
from pgvault.ids import has_zone, new_backup_id, parse_time
from pgvault.restore.drill_logical import DrillOutcome
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.synthetic import logical_row, physical_row, wal_rows

LSN = {"type": "string", "pattern": r"^[0-9A-F]+/[0-9A-F]+$"}
BASE: dict[str, Any] = {
    "type": "object",
    "required": ["cluster", "ok"],
    "properties": {"cluster": {"type": "string", "minLength": 1}, "ok": {"type": "boolean"}},
}


def schema(**props: Any) -> dict[str, Any]:
    return {
        **BASE,
        "required": [*BASE["required"], *props],
        "properties": {**BASE["properties"], **props},
    }


ARR = {"type": "array"}
WINDOWS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["start", "end"],
        "properties": {"start": {"type": "string"}, "end": {"type": "string"}},
    },
}
ARTIFACT = {
    "type": "object",
    "required": ["kind", "name", "state"],
    "properties": {"start_lsn": {"anyOf": [LSN, {"type": "null"}]}},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "status": schema(
        status={"enum": ["OK", "WARNING", "CRITICAL", "UNKNOWN"]},
        exit_code={"type": "integer"},
        queues=ARR,
        restorable=WINDOWS,
        gaps=ARR,
        backups=ARR,
        wal_lag={"type": "object", "required": ["seconds", "segments"]},
        drills=ARR,
        failing={"type": "array", "items": {"properties": {"status": {"not": {"const": "OK"}}}}},
    ),
    "check": schema(status={"type": "string"}, checks=ARR, counts={"type": "object"}),
    "catalog list": schema(
        count={"type": "integer"}, artifacts={"type": "array", "items": ARTIFACT}
    ),
    "catalog restorable": schema(windows=WINDOWS, backups=ARR, logical=ARR),
    "catalog restorable --at": schema(target={"type": "string"}, restorable={"type": "boolean"}),
    "catalog gaps": schema(gap_count={"type": "integer"}, timelines=ARR),
    "retention apply --dry-run": schema(
        dry_run={"const": True}, artifacts={"type": "object"}, wal_segments={"type": "object"}
    ),
    "drill logical": schema(
        drills={
            "type": "array",
            "items": {
                "required": ["db", "ok", "result"],
                "properties": {"ok": {"type": "boolean"}},
            },
        }
    ),
}


def no_integer_lsns(node: Any, where: str = "$") -> None:
    """Every key naming an LSN holds an "X/Y" string (or null), wherever it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("lsn") and value is not None:
                assert isinstance(value, str) and re.match(LSN["pattern"], value), (
                    f"{where}.{key} = {value!r}"
                )
            no_integer_lsns(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            no_integer_lsns(value, f"{where}[{i}]")


def check(name: str, data: Any) -> None:
    jsonschema.validate(data, SCHEMAS[name])
    no_integer_lsns(data)


NOW = datetime.now(UTC)
START = NOW - timedelta(days=20)


def populate(env: PgvaultEnv) -> None:
    cat = CatalogDB(env.settings.catalog_path, env.cluster)
    try:
        wal_rows(cat, 1, 1, 480, START, timedelta(hours=1), skip={300})
        for hours, segno in ((0, 1), (319, 320)):
            done = START + timedelta(hours=hours, minutes=2)
            physical_row(cat, new_backup_id(done), done, 1, segno, segno)
        for day in (3, 2):
            done = NOW - timedelta(days=day)
            logical_row(cat, "appdb", new_backup_id(done), done)
    finally:
        cat.close()


@pytest.fixture
def env(make_env: EnvFactory) -> PgvaultEnv:
    e = make_env(
        "local",
        extra={
            "postgres": {"port": 9, "databases": ["appdb"]},
            "retention": {"physical_weeks": 1, "wal_days": 1, "logical_days": 1},
        },
    )
    e.cli("init")
    populate(e)
    return e


def test_every_json_output_is_one_family(env: PgvaultEnv) -> None:
    check("status", env.cli_json("status", ok_codes=(2,)))
    check("check", env.cli_json("check", "--no-alerts", ok_codes=(2, 3)))
    listed = env.cli_json("catalog", "list", "--kind", "physical")
    check("catalog list", listed)
    assert listed["ok"] is True and listed["count"] == 2
    windows = env.cli_json("catalog", "restorable")
    check("catalog restorable", windows)
    assert len(windows["windows"]) == 2
    at = (START + timedelta(hours=100)).isoformat()
    answer = env.cli_json("catalog", "restorable", "--at", at)
    check("catalog restorable --at", answer)
    assert answer["ok"] is answer["restorable"] is True
    gaps = env.cli_json("catalog", "gaps", ok_codes=(1,))
    check("catalog gaps", gaps)
    assert gaps["ok"] is False and gaps["gap_count"] == 1
    dry = env.cli_json("retention", "apply", "--dry-run")
    check("retention apply --dry-run", dry)
    outcome = DrillOutcome(db="appdb", result="failed", scratch_db="appdb_verify_20260101")
    check("drill logical", {"cluster": env.cluster, "ok": False, "drills": [outcome.as_json()]})
    assert outcome.as_json()["ok"] is False


def test_retention_dry_run_says_each_kind_once(env: PgvaultEnv) -> None:
    text = env.cli("retention", "apply", "--dry-run").stdout.splitlines()
    data = env.cli_json("retention", "apply", "--dry-run")
    heads = [line for line in text if re.match(r"^[a-z]+: ", line)]
    kinds = [line.split(":")[0] for line in heads]
    assert sorted(kinds) == sorted(set(kinds)), text  # one line per kind
    assert {"wal", "physical", "logical"} <= set(kinds)
    wal = next(line for line in heads if line.startswith("wal:"))
    gone = sum(r["segments"] for r in data["wal_segments"]["remove"])
    kept = sum(r["segments"] for r in data["wal_segments"]["keep"])
    assert gone > 0, data["wal_segments"]
    assert f"would remove {gone} segment(s)" in wal and f"keep {kept} segment(s)" in wal
    physical = next(line for line in heads if line.startswith("physical:"))
    assert physical == (
        f"physical: would remove {len(data['artifacts']['physical']['remove'])}, "
        f"keep {len(data['artifacts']['physical']['keep'])}"
    )
    details = [line for line in text if line.startswith("  ")]
    assert details and all(line[2] in "+-" and ": " in line for line in details)


def test_command_line_times() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("now-15min", now) == now - timedelta(minutes=15)
    assert parse_time("now-2h", now) == now - timedelta(hours=2)
    assert parse_time("now - 1d", now) == now - timedelta(days=1)
    assert parse_time("2026-11-24 03:00 UTC") == datetime(2026, 11, 24, 3, tzinfo=UTC)
    assert parse_time("2026-11-24T03:00:00") == datetime(2026, 11, 24, 3, tzinfo=UTC)
    assert parse_time("2026-11-24T11:00:00+08:00") == datetime(2026, 11, 24, 3, tzinfo=UTC)
    for bad in ("yesterday", "now-15", "now+1h", "2026-11-24 03:00 PST"):
        with pytest.raises(ValueError):
            parse_time(bad)
    assert not has_zone("2026-11-24T03:00:00") and has_zone("2026-11-24T03:00:00Z")
    assert has_zone("now-1h") and has_zone("2026-11-24 03:00 UTC")


def test_a_zoneless_time_is_said_to_be_utc(env: PgvaultEnv) -> None:
    at = (START + timedelta(hours=100)).replace(tzinfo=None).isoformat()
    shanghai = env.cli("catalog", "restorable", "--at", at, env={"TZ": "Asia/Shanghai"})
    assert "read as UTC" in shanghai.stderr and "UTC" in shanghai.stderr
    utc = env.cli("catalog", "restorable", "--at", at, env={"TZ": "UTC"})
    assert "read as UTC" not in utc.stderr
