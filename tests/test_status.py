"""`pgvault status`: the verdict first with check's exit codes, plain text when redirected,
the restorable windows and gaps from the catalog; `status --json`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.restorable import merged, windows
from pgvault.checks.base import CheckResult, Status
from pgvault.checks.runner import Report
from pgvault.config import settings_from_dict
from pgvault.status.model import build
from pgvault.status.page import render
from pgvault.status.text import lines
from pgvault.timeutil import iso
from pgvault.walfile import segment_name
from tests.conftest import EnvFactory
from tests.synthetic import logical_row, physical_row, wal_rows

NOW = datetime.now(UTC)


def fill(cat: CatalogDB, *, hole: bool) -> None:
    start = NOW - timedelta(days=5)
    wal_rows(cat, 1, 1, 100, start, timedelta(hours=1), skip={60} if hole else set())
    physical_row(cat, "B1", start + timedelta(minutes=2), 1, 1, 1)
    logical_row(cat, "appdb", "D1", NOW - timedelta(hours=3))


def test_healthy_view_from_a_clean_report(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {"cluster": "c1", "spool_dir": str(tmp_path), "catalog_path": str(tmp_path / "c.db")}
    )
    cat = CatalogDB(settings.catalog_path, "c1")
    fill(cat, hole=False)
    expected = merged(windows(cat))
    cat.close()
    results = [
        CheckResult(
            "queues",
            "upload",
            Status.OK,
            "1 consumer(s)",
            details={"queue": "q.upload", "ready": 0, "retrying": 0, "consumers": 2},
        ),
        CheckResult("upload_lag", "wal", Status.OK, "fine", value=30.0, unit="s"),
    ]
    view = build(settings, report=Report("c1", NOW, results))
    out = lines(view)
    assert out[0] == "OK" and view.exit_code == 0
    assert any("upload" in line and "consumed by 2" in line for line in out)
    assert view.windows == expected and len(expected) == 1 and not view.gaps
    assert "failing checks: none" in out
    kinds = {b.kind: b for b in view.backups}
    assert kinds["logical"].db == "appdb" and kinds["logical"].duration_s == 180
    assert kinds["physical"].size == 4000
    data = view.as_json()
    assert data["ok"] is True and data["cluster"] == "c1"
    assert data["restorable"] == [{"start": s, "end": e} for s, e in expected]
    html = render(view)
    assert f'data-start="{expected[0][0]}"' in html


def test_status_on_a_broken_pipeline(make_env: EnvFactory) -> None:
    env = make_env("local", extra={"postgres": {"port": 9, "databases": ["appdb"]}})
    env.cli("init")
    cat = env.catalog()
    fill(cat, hole=True)
    cat.close()
    proc = env.cli("status", check=False)  # stdout is a pipe: no colours
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "CRITICAL"
    assert "\x1b[" not in proc.stdout
    gap = segment_name(1, 60)
    assert any(line.strip().startswith(f"GAP {gap}..{gap}") for line in out), proc.stdout
    assert "failing checks:" in out
    failing = out[out.index("failing checks:") + 1 :]
    assert failing and all(not line.strip().startswith("OK") for line in failing)
    assert any("wal_gaps" in line for line in failing)
    assert any("NOT consumed" in line for line in out)  # no worker runs in this test
    data = env.cli_json("status", ok_codes=(2,))
    assert data["ok"] is False and data["status"] == "CRITICAL" and data["exit_code"] == 2
    assert [g["first"] for g in data["gaps"]] == [gap]
    assert len(data["restorable"]) == 1  # from B1 to the hole
    assert data["restorable"][0]["end"] < iso(NOW - timedelta(days=5) + timedelta(hours=59))
    assert all(c["status"] != "OK" for c in data["failing"])
