"""Usage errors keep the documented contract: exit 2 (check: Nagios UNKNOWN 3), one line
naming the option as typed, a "did you mean" where one is close. No service needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

PGVAULT = [sys.executable, "-m", "pgvault"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGVAULT, "--config", "/nonexistent/pgvault.toml", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (
            ["check", "--nagioss"],
            3,
            "pgvault check: error: no such option: --nagioss (did you mean --nagios?)",
        ),
        (["catalog", "restorable", "--att", "T"], 2, "no such option: --att (did you mean --at?)"),
        (
            ["restore", "pitr", "--to", "2026-01-01"],
            2,
            "pgvault restore pitr: error: missing option --target-dir",
        ),
        (
            ["restore", "logical", "--db", "a", "--target-db", "b", "--jobs", "0"],
            2,
            "invalid value for '--jobs'",
        ),
        (["catalog", "restorble"], 2, "no such command 'restorble' (did you mean 'restorable'?)"),
        (["nosuchcommand"], 2, "pgvault: error: no such command 'nosuchcommand'"),
        (
            ["restore", "pitr", "--to", "x", "--target-dir", "/tmp/x", "--tablespace-map", "bad"],
            2,
            "--tablespace-map 'bad': expected NAME=DIR",
        ),
    ],
)
def test_usage_errors_are_one_line_with_the_documented_exit_code(
    args: list[str], code: int, expected: str
) -> None:
    proc = run(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
