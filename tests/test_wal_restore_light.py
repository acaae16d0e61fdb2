"""`wal-restore` served from the spool stays light: stdlib and the stdlib-only pgvault
modules (fsutil.copy_verified proves the copy), no pydantic, boto3, zstandard, typer."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.env import write_toml

NAME = "00000002.history"  # not a segment: no background prefetcher is started


def test_spool_path_stays_light_and_verified(tmp_path: Path) -> None:
    (tmp_path / "spool" / "wal").mkdir(parents=True)
    (tmp_path / "pg_wal").mkdir()
    data = b"1\t0/4000000\tno recovery target specified\n"
    (tmp_path / "spool" / "wal" / NAME).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "spool" / "wal" / f"{NAME}.sha256").write_text(f"{sha}  {NAME}\n")
    cfg = tmp_path / "pgvault.toml"
    write_toml(cfg, {"cluster": "unit", "spool_dir": str(tmp_path / "spool")})
    dest = tmp_path / "pg_wal" / "RECOVERYHISTORY"
    code = (
        "import sys\n"
        f"sys.argv = ['pgvault', '--config', {str(cfg)!r}, 'wal-restore', {NAME!r}, "
        f"{str(dest)!r}]\n"
        "from pgvault.__main__ import main\n"
        "rc = main()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pika', "
        "'boto3', 'botocore', 'typer', 'rich', 'zstandard', 'sqlite_utils'})\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 []", out.stdout + out.stderr
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
