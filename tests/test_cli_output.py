"""Terminal output that stays readable: aligned columns with long subjects, group help
that does not cut descriptions, option names instead of internal types. No service."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from pgvault.checks.base import CheckResult, Status, align
from pgvault.checks.runner import Report
from pgvault.doctor import lines

PGVAULT = [sys.executable, "-m", "pgvault"]


def help_text(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [*PGVAULT, *args, "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_group_help_keeps_whole_descriptions() -> None:
    top = " ".join(help_text().split())
    assert (
        "doctor Check everything a failed night would trip over; one line each, with the fix."
        in top
    )
    catalog = " ".join(help_text("catalog").split())
    assert (
        "audit Audit the store against the catalog; exit 1 when objects are missing or damaged."
        in catalog
    )
    for text in (help_text(), help_text("catalog"), help_text("restore")):
        commands = text.split("Commands:", 1)[1]
        assert "..." not in commands, commands


def test_options_show_a_name_not_an_internal_type() -> None:
    for args in (("backup", "logical"), ("restore", "logical"), ("check",), ("catalog", "verify")):
        text = help_text(*args)
        assert "list[" not in text and "<list" not in text, text
    assert "--db DB" in help_text("backup", "logical")
    assert "--table TABLES" in help_text("restore", "logical")


def result(name: str, subject: str, status: Status = Status.OK) -> CheckResult:
    return CheckResult(name, subject, status, "fine", action="do this")


def test_check_and_doctor_columns_line_up_with_long_subjects() -> None:
    results = [
        result("wal_lag", "main"),
        result("backup_age", "a_really_long_database_name_for_strapi_production"),
        result("drill_age_logical_long_name", "x", Status.WARNING),
    ]
    report = Report(cluster="c", checked_at=datetime.now(UTC), results=results)
    out = report.lines()
    starts = {ln.index("fine") for ln in out}
    assert len(starts) == 1, out
    doc = lines(
        [result("postgres", "doctor"), result("database:a_long_database_name_here", "doctor")],
        ("ok", "config", "/etc/pgvault/pgvault.toml"),
    )
    assert len({ln.index(ln.split()[2]) for ln in doc}) == 1, doc
    assert align([("a", "b", "c")], (3, 3)) == ["a   b   c"]


def test_interactive_commands_log_only_problems_unless_asked() -> None:
    """An interactive command prints its summary once (stdout), not again as INFO lines;
    daemons log their work; -v brings the INFO lines back, -q keeps only warnings."""
    import logging

    from pgvault.log import setup_logging

    root = logging.getLogger()
    try:
        setup_logging(0, False, daemon=False)
        assert root.level == logging.WARNING
        setup_logging(1, False, daemon=False)
        assert root.level == logging.INFO
        setup_logging(0, False, daemon=True)
        assert root.level == logging.INFO
        setup_logging(2, False, daemon=False)
        assert root.level == logging.DEBUG
        setup_logging(1, True, daemon=True)
        assert root.level == logging.WARNING
    finally:
        setup_logging(0, False)
