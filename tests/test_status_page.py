"""The status page served by `pgvault metrics` at `/`, loaded in a real headless Chromium:
it shows the restorable windows the catalog reports, a gap where a segment is missing,
backups/dumps/drills as marks, and escapes names. A screenshot goes to artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pgvault.catalog.restorable import merged, windows
from pgvault.catalog.runs import record_drill
from pgvault.timeutil import iso
from pgvault.walfile import segment_name
from tests.conftest import EnvFactory
from tests.pgcluster import free_port
from tests.synthetic import logical_row, physical_row, wal_rows

ARTIFACTS = Path(__file__).parent.parent / "artifacts"
EVIL = "shop<script>alert(1)</script>"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed when missing (the test machines run as root)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"], check=True, env=env, capture_output=True
        )
        found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed and cannot be installed")
        pytest.skip("chromium is not installed")
    return found


def browse(chromium: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="pgvault-chromium-")
    try:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def with_class(self, cls: str) -> list[dict[str, str]]:
        return [a for _t, a in self.found if cls in a.get("class", "").split()]


def test_status_page_in_headless_chromium(make_env: EnvFactory, chromium: str) -> None:
    env = make_env("local", extra={"postgres": {"port": 9, "databases": ["appdb"]}})
    env.cli("init")
    now = datetime.now(UTC)
    start = now - timedelta(days=10)
    every = timedelta(hours=1)
    cat = env.catalog()
    try:
        # WAL hourly for 10 days, segment 120 never arrived; a base backup before the hole
        # and one after it, dumps (one of a database with markup in its name), two drills
        wal_rows(cat, 1, 1, 239, start, every, skip={120})
        physical_row(cat, "B1", start + timedelta(minutes=2), 1, 1, 1)
        physical_row(cat, "B2", start + every * 150 + timedelta(minutes=2), 1, 151, 151)
        logical_row(cat, "appdb", "D1", now - timedelta(days=2))
        logical_row(cat, EVIL, "D2", now - timedelta(days=1))
        for days, result in ((3, "ok"), (1, "failed")):
            record_drill(
                cat,
                kind="pitr",
                target="appdb",
                backup="B2",
                started_at=now - timedelta(days=days, minutes=5),
                finished_at=now - timedelta(days=days),
                result=result,
                details={},
            )
        expected = merged(windows(cat))
    finally:
        cat.close()
    assert len(expected) == 2, expected  # the hole splits the restorable time in two

    port = free_port()
    proc = env.spawn("metrics", "--listen", f"127.0.0.1:{port}", log_name="metrics")
    url = f"http://127.0.0.1:{port}/?days=14"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10):
                break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.3)
    try:
        dom = browse(chromium, url, "--dump-dom").stdout
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status.png"
        shot.unlink(missing_ok=True)
        browse(chromium, url, f"--screenshot={shot}", "--window-size=1280,900")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")

    page = Elements()
    page.feed(dom)
    verdict = [a for t, a in page.found if t == "h1"]
    assert verdict and verdict[0]["data-status"] == "CRITICAL"  # a gap is critical
    shown = [(a["data-start"], a["data-end"]) for a in page.with_class("window")]
    assert shown == expected
    gaps = page.with_class("gap")
    assert [(g["data-first"], g["data-last"]) for g in gaps] == [
        (segment_name(1, 120), segment_name(1, 120))
    ]
    assert gaps[0]["data-after"] == iso(start + every * 118)  # segment 119's last commit
    kinds = [a["data-kind"] for a in page.with_class("mark")]
    assert kinds.count("physical") == 2 and kinds.count("logical") == 2
    drills = [a for a in page.with_class("mark") if a["data-kind"] == "drill"]
    assert [d["data-ok"] for d in drills] == ["true", "false"]
    assert not [t for t, _a in page.found if t == "script"]
    assert "shop&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script" not in dom
