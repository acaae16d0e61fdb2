"""Every `--json` command of a real pipeline speaks the one family of docs/JSON.md: an
object with `cluster` and `ok`, LSNs as "X/Y" strings (no integer copies, no `_text`
twins). tests/test_json_family.py holds the detailed schemas of the query commands;
this runs the commands that act (backups, restores, drills, audit, keys, doctor)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jsonschema
import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.logical_data import create_database
from tests.test_pitr import prepare

pytestmark = pytest.mark.slow

LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")
FAMILY: dict[str, Any] = {
    "type": "object",
    "required": ["cluster", "ok"],
    "properties": {"cluster": {"type": "string", "minLength": 1}, "ok": {"type": "boolean"}},
}


def lsn_problems(value: Any, path: str = "") -> list[str]:
    """Keys that name an LSN must hold "X/Y" text (or null); no `*_lsn_text` copies."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key.endswith("_lsn_text"):
                out.append(f"{where}: a text copy of an LSN")
            elif (
                (key == "lsn" or key.endswith("_lsn"))
                and item is not None
                and not (isinstance(item, str) and LSN.match(item))
            ):
                out.append(f"{where}: {item!r} is not an X/Y LSN")
            out += lsn_problems(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += lsn_problems(item, f"{path}[{i}]")
    return out


def family(env: PgvaultEnv, *args: str, ok_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    proc = env.cli(*args, "--json", check=False, timeout=600)
    assert proc.returncode in ok_codes, f"{args}: exit {proc.returncode}: {proc.stderr}"
    data = json.loads(proc.stdout)
    jsonschema.validate(data, FAMILY)
    assert data["cluster"] == env.cluster, args
    assert not lsn_problems(data), (args, lsn_problems(data))
    return data


def test_every_acting_command_speaks_the_json_family(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    create_database(pg, "shop", k=1)
    env.data["postgres"]["databases"] = ["shop"]
    env.write_config()
    assert family(env, "config", "show")["ok"] is True
    family(env, "doctor", ok_codes=(0, 1))
    assert family(env, "backup", "logical")["ok"] is True
    physical = family(env, "backup", "physical")
    assert LSN.match(physical["start_lsn"]) and LSN.match(physical["end_lsn"])
    pg.sql("INSERT INTO ticks(note) VALUES ('json family')")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    assert family(env, "worker", "catalog", "--once")["ok"] is True
    assert family(env, "catalog", "verify")["ok"] is True
    env.drain()
    audit = family(env, "catalog", "audit", ok_codes=(0, 1))
    assert audit["ok"] is (audit["result"] == "ok")
    restored = family(env, "restore", "logical", "--db", "shop", "--target-db", "shop_json")
    assert restored["ok"] is True and restored["target_db"] == "shop_json"
    time.sleep(0.2)
    target = pg.one("SELECT clock_timestamp()").isoformat()
    pg.sql("INSERT INTO ticks(note) VALUES ('after target')")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    pitr_dir = env.base / "pitr-json"
    pitr = family(env, "restore", "pitr", "--to", target, "--target-dir", str(pitr_dir))
    assert pitr["ok"] is True and pitr["started"] is False
    scratch = env.base / "scratch"
    scratch.mkdir()
    drill = family(env, "drill", "pitr", "--scratch-dir", str(scratch), "--seed", "1")
    assert drill["ok"] is True
    assert family(env, "drill", "logical")["ok"] is True
    keys = family(env, "keys", "generate", "--output", str(env.base / "identity.txt"))
    assert keys["recipient"].startswith("age1")
    assert family(env, "keys", "rotate-hmac")["ok"] is True
    assert family(env, "catalog", "export")["ok"] is True
