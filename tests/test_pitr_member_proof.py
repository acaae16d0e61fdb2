"""`restore pitr` proves every base backup member against backup_manifest while it
extracts it (pgvault.restore.proven_extract): a member whose bytes differ from the
manifest fails the restore, even when the archive around it carries a valid sha256, and
the target is left empty."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from pgvault.errors import RestoreError
from pgvault.restore.proven_extract import Proof, extract_proven
from tests.conftest import EnvFactory
from tests.test_pitr import prepare

pytestmark = pytest.mark.slow


def tampered(archive: Path) -> tuple[bytes, str]:
    """The archive with one byte of one relation file flipped; and that member's name."""
    raw = zstandard.ZstdDecompressor().stream_reader(archive.open("rb")).read()
    src = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    out = io.BytesIO()
    victim = ""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data and not victim and member.name.startswith("base/") and member.size > 8192:
                victim = member.name
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    assert victim
    return zstandard.ZstdCompressor().compress(out.getvalue()), victim


def test_a_member_that_differs_from_the_manifest_fails_the_restore(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = make_env("local")
    prepare(env)
    env.cli("backup", "physical")
    env.drain()
    (backup,) = env.cli_json("catalog", "list", "--kind", "physical")["artifacts"]
    spooled = env.spool / "physical" / backup["name"]
    base = spooled / "base.tar.zst"

    # an intact backup: extraction alone proves every manifest file, so pg_verifybackup
    # is told not to hash them again
    proof = Proof.of(spooled / "backup_manifest")
    extract_proven(base, tmp_path / "intact", proof)
    # a one-pass (-Xfetch) backup's manifest lists its WAL too: proven from pg_wal.tar.zst
    extract_proven(spooled / "pg_wal.tar.zst", tmp_path / "intact" / "pg_wal", proof, "pg_wal/")
    assert any(p.startswith("pg_wal/") for p in proof.proven)
    assert proof.complete and proof.proven == set(proof.expected)
    assert proof.verifybackup_flags() == ["--skip-checksums"]

    # one member changed, and the archive's own sha256 recorded again (spool and
    # catalog), so the fetch accepts it: only the member proof can see the change
    data, victim = tampered(base)
    base.chmod(0o644)
    base.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    conn = sqlite3.connect(env.settings.catalog_path)
    with conn:
        (files_json,) = conn.execute(
            "SELECT files FROM artifacts WHERE kind = 'physical' AND name = ?", (backup["name"],)
        ).fetchone()
        files = json.loads(files_json)
        for f in files:
            if f["name"] == "base.tar.zst":
                f.update(sha256=sha, size=len(data))
        conn.execute(
            "UPDATE artifacts SET files = ? WHERE kind = 'physical' AND name = ?",
            (json.dumps(files), backup["name"]),
        )
    conn.close()
    target = env.base / "restored"
    target.mkdir()
    proc = env.cli(
        "restore", "pitr", "--backup", backup["name"], "--target-dir", str(target), check=False
    )
    assert proc.returncode != 0
    assert victim in proc.stderr and "does not match backup_manifest" in proc.stderr, proc.stderr
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_failed_proof_with_a_full_queue_fails_fast_and_closes_nothing_twice(
    tmp_path: Path,
) -> None:
    """The writer thread fails on the first member while the reader keeps queueing the
    next ones: extraction must raise, not wait forever on a queue nobody empties (a
    double close once killed the writer thread and hung `restore pitr`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(6):
            blob = bytes([i]) * (3 << 20)
            info = tarfile.TarInfo(f"base/1/{i}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    archive = tmp_path / "base.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
    proof = Proof(expected={"base/1/0": (3 << 20, "0" * 64)}, usable=True)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            extract_proven(archive, tmp_path / "out", proof)
            outcome.append(None)
        except BaseException as exc:  # the assertion below names it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "extraction hung after a failed member proof"
    (exc,) = outcome
    assert isinstance(exc, RestoreError) and "does not match backup_manifest" in str(exc)
    assert not proof.complete
