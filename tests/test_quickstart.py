"""The README's quick tour, in order, against a throw-away cluster: each command exits as
documented (0 ok; `check` with the Nagios code of its verdict). The commands are read
from the README, so the test breaks when the README changes without it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import EnvFactory
from tests.logical_data import create_database, fingerprint

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
NAGIOS = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def quick_tour() -> list[str]:
    """The `pgvault ...` commands of the README's quick tour, comments and `&` stripped."""
    text = README.read_text()
    block = text.split("## Quick tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        code = line.split("#", 1)[0]
        for part in re.split(r"&&|&", code):
            if part.strip().startswith("pgvault "):
                out.append(" ".join(part.split()))
    return out


def test_the_readme_quick_tour_runs_as_documented(make_env: EnvFactory) -> None:
    tour = quick_tour()
    for cmd in (
        "pgvault init",
        "pgvault doctor",
        "pgvault producer",
        "pgvault worker upload",
        "pgvault backup logical",
        "pgvault backup physical",
        "pgvault catalog restorable",
        "pgvault check",
        "pgvault retention apply --dry-run",
    ):
        assert cmd in tour, (cmd, tour)
    assert any(c.startswith("pgvault restore logical --db medusa_production") for c in tour)

    env = make_env("local")
    assert env.cli("init", check=False).returncode == 0
    pg = env.make_pg()
    create_database(pg, "medusa_production", k=2)
    env.data["postgres"]["databases"] = ["medusa_production", "missing_db"]
    env.write_config()
    # doctor: one failing line per configured database that does not exist
    proc = env.cli("doctor", check=False)
    assert proc.returncode == 1, proc.stdout
    missing = [ln for ln in proc.stdout.splitlines() if ln.startswith("fail")]
    assert len(missing) == 1 and "database:missing_db" in missing[0], proc.stdout
    env.data["postgres"]["databases"] = ["medusa_production"]
    env.write_config()
    proc = env.cli("doctor", check=False)
    assert proc.returncode == 0, proc.stdout

    assert env.cli("backup", "logical", check=False).returncode == 0
    assert env.cli("backup", "physical", check=False).returncode == 0
    pg.wait_archived(pg.switch_wal())
    env.drain(cli=True)  # `pgvault producer` and the workers, each --once
    proc = env.cli("catalog", "restorable", check=False)
    assert proc.returncode == 0, proc.stderr
    proc = env.cli(
        "restore", "logical", "--db", "medusa_production", "--target-db", "medusa_copy",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert fingerprint(pg, "medusa_copy") == fingerprint(pg, "medusa_production")
    proc = env.cli("check", "--json", check=False)
    verdict = json.loads(proc.stdout)["status"]
    assert proc.returncode == NAGIOS[verdict], (proc.returncode, verdict)
    # the text form: its exit code is the worst status it prints (the first check's own
    # alerts may change the second's verdict, so each run is read on its own)
    proc = env.cli("check", check=False)
    shown = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.split()]
    severity = ["OK", "WARNING", "UNKNOWN", "CRITICAL"]
    worst = max((s for s in shown if s in NAGIOS), key=severity.index, default="OK")
    assert proc.returncode == NAGIOS[worst], proc.stdout
    proc = env.cli("retention", "apply", "--dry-run", check=False)
    assert proc.returncode == 0, proc.stderr
