"""Base backup extraction for a restore: extract, then pg_verifybackup re-hashing the tree
(before) vs every member proven while it is written, then pg_verifybackup
--skip-checksums (after), on the same pgvault base backup, alternating, in one run.

    .venv/bin/python bench/extract.py SPOOL/physical/<backup id> [--rounds 3]

(bench/replay.py leaves one behind with PGVAULT_BENCH_KEEP=1.) Both paths end with the
same files on disk; the after path fails on a member that differs from backup_manifest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import PG_BIN

from pgvault.restore.proven_extract import Proof, extract_proven
from pgvault.restore.safetar import extract_zst_tar


def verifybackup(target: Path, *flags: str) -> None:
    subprocess.run([str(PG_BIN / "pg_verifybackup"), *flags, str(target)], check=True)


def before(backup: Path, target: Path) -> None:
    extract_zst_tar(backup / "base.tar.zst", target)
    extract_zst_tar(backup / "pg_wal.tar.zst", target / "pg_wal")
    shutil.copy2(backup / "backup_manifest", target / "backup_manifest")
    verifybackup(target)


def after(backup: Path, target: Path) -> None:
    proof = Proof.of(backup / "backup_manifest")
    extract_proven(backup / "base.tar.zst", target, proof)
    # one-pass backups list their WAL in backup_manifest (pg_wal/...): proven too
    extract_proven(backup / "pg_wal.tar.zst", target / "pg_wal", proof, "pg_wal/")
    shutil.copy2(backup / "backup_manifest", target / "backup_manifest")
    assert proof.complete
    verifybackup(target, *proof.verifybackup_flags())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backup", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pgvault-bench-extract-", dir=args.backup.parent))
    times: dict[str, list[float]] = {"before": [], "after": []}
    try:
        for rnd in range(args.rounds):
            order = [("before", before), ("after", after)]
            for label, fn in order if rnd % 2 == 0 else order[::-1]:
                target = scratch / label
                os.sync()
                t0 = time.perf_counter()
                fn(args.backup, target)
                times[label].append(time.perf_counter() - t0)
                shutil.rmtree(target)
            print(
                f"round {rnd + 1} (load {os.getloadavg()[0]:.1f}): extract + pg_verifybackup "
                f"{times['before'][-1]:.1f} s, proven extract + pg_verifybackup -s "
                f"{times['after'][-1]:.1f} s, ratio {times['after'][-1] / times['before'][-1]:.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
