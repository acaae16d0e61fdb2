"""A `pgvault` executable the postgres user can run (archive_command, restore_command).

The project venv is used when postgres can execute it (the usual case: the venv is
built from /usr/bin/python3 inside a world-readable checkout). Otherwise the package
and its site-packages are copied under /tmp, readable by everyone, with a launcher.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.pgcluster import as_postgres

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent / "pgvault"


def _postgres_can_run(binary: Path) -> bool:
    try:
        return as_postgres([str(binary), "--version"], timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "pgvault").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pgvault_for_postgres() -> Path:
    if _postgres_can_run(VENV_BIN):
        return VENV_BIN
    base = Path("/tmp/pgvault-runtime") / _source_hash()
    launcher = base / "pgvault"
    if not launcher.exists():
        site = Path(sysconfig.get_paths()["purelib"])
        base.mkdir(parents=True, exist_ok=True)
        shutil.copytree(REPO / "pgvault", base / "src" / "pgvault", dirs_exist_ok=True)
        shutil.copytree(site, base / "site", dirs_exist_ok=True, symlinks=True)
        launcher.write_text(
            f"#!/usr/bin/python3\nimport sys\nsys.path[:0] = ['{base}/src', '{base}/site']\n"
            "from pgvault.__main__ import main\nsys.exit(main())\n"
        )
        launcher.chmod(0o755)
        subprocess.run(["chmod", "-R", "a+rX", str(Path("/tmp/pgvault-runtime"))], check=True)
    if not _postgres_can_run(launcher):
        raise RuntimeError(f"the postgres user cannot run {VENV_BIN} nor {launcher}")
    return launcher
