"""pg_dump facts: tool versions, compression choice, database names."""

from __future__ import annotations

import re
from typing import Any

from pgvault import dbname, pgtools
from pgvault.errors import BackupError
from pgvault.pgtools import run_tool

_VERSION_RE = re.compile(r"(\d+)(?:\.(\d+))?")

TABLES_FILE = "tables.json"


def check_db_name(name: str) -> str:
    """A database name PostgreSQL accepts; its spool directory and object keys use
    `pgvault.dbname.encode(name)`."""
    return dbname.check(name)


def tool_version(path: str) -> tuple[str, int]:
    """('15.20', 15) from `pg_dump --version`, asked once per process (the look-up of
    the server's own pg_dump has usually asked already: pgvault.pgtools.tool_version)."""
    version = pgtools.tool_version(path)
    m = _VERSION_RE.fullmatch(version)
    if not m:
        out = run_tool([path, "--version"]).stdout
        raise BackupError(f"cannot read the version of {path} ({out.strip()[:60]!r})")
    return version, int(m.group(1))


def compression(pg_dump_major: int, level: int) -> tuple[str, dict[str, Any]]:
    """pg_dump --compress value and its description for the manifest."""
    if level == 0:
        return "0", {"method": "none", "level": 0}
    if pg_dump_major >= 16:
        return f"zstd:{level}", {"method": "zstd", "level": level}
    return str(level), {"method": "gzip", "level": level}


__all__ = ["TABLES_FILE", "check_db_name", "compression", "tool_version"]
