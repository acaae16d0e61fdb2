"""Layering rules no import contract can see (issue 14): no module outside pgvault/catalog/
runs SQL against the catalog's tables; it calls a named query function of the catalog."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pgvault"
CATALOG_TABLES = (
    "artifacts",
    "wal_runs",
    "timelines",
    "drills",
    "backup_runs",
    "leases",
    "settings",
    "audit_runs",
    "audit_cycles",
    "dirty_blocks",
)
SQL = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(" + "|".join(CATALOG_TABLES) + r")\b", re.IGNORECASE
)
# path (relative to pgvault/) -> the table names it may name, and why
EXCEPTIONS: dict[str, tuple[set[str], str]] = {
    # restore_command's light path: stdlib sqlite3, no pydantic or sqlite_utils import
    "restore/wal_restore.py": ({"artifacts"}, "catalog_row, the light restore_command read"),
    # the alert state is its own SQLite database, not the catalog; its `leases` table is
    # the alert worker's, not the catalog's
    "alerts/state.py": ({"leases"}, "its own alerts database"),
}


def _offences(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    allowed = EXCEPTIONS.get(rel, (set(), ""))[0]
    text = path.read_text(encoding="utf-8")
    out = []
    for match in SQL.finditer(text):
        table = match.group(1).lower()
        if table in allowed:
            continue
        line = text.count("\n", 0, match.start()) + 1
        out.append(f"pgvault/{rel}:{line}: {match.group(0)!r}")
    return out


def test_no_catalog_sql_outside_the_catalog_package() -> None:
    files = [
        p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "catalog"
    ]
    assert len(files) > 50  # the scan found the package
    offences = [o for p in files for o in _offences(p)]
    assert not offences, (
        "SQL against catalog tables outside pgvault/catalog/ (move it into a named query "
        "function of pgvault.catalog returning typed rows):\n" + "\n".join(offences)
    )


def test_the_exceptions_still_exist() -> None:
    """An exception whose file no longer needs it is removed from the list."""
    for rel, (tables, why) in EXCEPTIONS.items():
        text = (PACKAGE / rel).read_text(encoding="utf-8")
        used = {m.group(1).lower() for m in SQL.finditer(text)}
        assert tables <= used, f"pgvault/{rel} ({why}) no longer names {tables - used}"


def test_the_scan_catches_catalog_sql() -> None:
    """The pattern sees the forms the code used (multi-line strings, aliases, upserts)."""
    for sql in (
        'catalog.query("SELECT kind, name FROM artifacts WHERE expiring_at IS NOT NULL")',
        '"SELECT MAX(end_segno) FROM wal_runs WHERE timeline=?"',
        '"INSERT INTO settings(key, value) VALUES (?, ?) "',
        '"UPDATE artifacts SET state=?"',
        '"verified_at) = (SELECT MAX(x) FROM artifacts "\n "b WHERE b.kind=a.kind"',
    ):
        assert SQL.search(sql), sql
    for prose in ("read rows from the catalog", "from artifacts_list import x"):
        assert not SQL.search(prose), prose
