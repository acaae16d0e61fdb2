"""`pgvault wal-archive`: exit codes, durability, refusal to overwrite (invariant 1),
and its import diet (invariant 2). Runs the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.env import write_toml
from tests.pgcluster import as_postgres, chown_pg
from tests.walgen import segment_bytes, write_segment

SEG = "000000010000000000000003"


@pytest.fixture
def setup(workdir: Path) -> tuple[Path, Path, Path]:
    spool = workdir / "spool"
    src = workdir / "pg_wal"
    spool.mkdir()
    src.mkdir()
    cfg = workdir / "pgvault.toml"
    write_toml(cfg, {"cluster": "unit", "spool_dir": str(spool)})
    return cfg, spool, src


def archive(
    cfg: Path,
    path: Path | str,
    name: str,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "pgvault", "--config", str(cfg), "wal-archive", str(path), name]
    if user:
        return as_postgres(args)
    return subprocess.run(
        args, capture_output=True, text=True, check=False, env=dict(os.environ, **(env or {}))
    )


def leftovers(spool: Path) -> list[str]:
    return [p.name for p in (spool / "wal").glob(".*")] if (spool / "wal").exists() else []


def test_archives_a_segment_with_its_sha256(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    path = write_segment(src, SEG)
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 0, proc.stderr
    stored = spool / "wal" / SEG
    assert stored.read_bytes() == path.read_bytes()
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (spool / "wal" / f"{SEG}.sha256").read_text() == f"{sha}  {SEG}\n"
    assert leftovers(spool) == []
    assert proc.stderr == ""


def test_same_name_same_content_is_success(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    path = write_segment(src, SEG)
    assert archive(cfg, path, SEG).returncode == 0
    again = archive(cfg, path, SEG)
    assert again.returncode == 0, again.stderr
    assert not list((spool / "alerts").glob("*.json")) if (spool / "alerts").exists() else True


def test_same_name_different_content_is_refused_and_alerted(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    first = write_segment(src, SEG)
    original = first.read_bytes()
    assert archive(cfg, first, SEG).returncode == 0
    other = src / "other"
    other.write_bytes(segment_bytes(SEG))  # same header, different random body
    proc = archive(cfg, other, SEG)
    assert proc.returncode == 1
    assert "different content" in proc.stderr and proc.stderr.count("\n") == 1
    assert (spool / "wal" / SEG).read_bytes() == original  # never overwritten
    alerts = [json.loads(p.read_text()) for p in (spool / "alerts").glob("*.json")]
    assert [a["check"] for a in alerts] == ["wal_archive_conflict"]
    assert alerts[0]["subject"] == SEG and alerts[0]["severity"] == "critical"


@pytest.mark.parametrize(
    "name",
    [
        "foo",
        "00000001000000000000000G",
        "0000000100000000000000031",
        "00000000.history",
        "000000010000000000000003.zst",
        "",
    ],
)
def test_bad_names_exit_2_with_one_line(setup: tuple[Path, Path, Path], name: str) -> None:
    cfg, spool, src = setup
    path = write_segment(src, SEG)
    proc = archive(cfg, path, name)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pgvault wal-archive: error:") and proc.stderr.count("\n") == 1
    assert not (spool / "wal").exists() or not any((spool / "wal").iterdir())


def test_missing_source_exits_2(setup: tuple[Path, Path, Path]) -> None:
    cfg, _spool, src = setup
    proc = archive(cfg, src / SEG, SEG)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_wrong_argument_count_exits_2(setup: tuple[Path, Path, Path]) -> None:
    cfg, _spool, _src = setup
    proc = subprocess.run(
        [sys.executable, "-m", "pgvault", "--config", str(cfg), "wal-archive", "only-one"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_misnamed_segment_is_refused(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    path = src / "x"
    path.write_bytes(segment_bytes("000000010000000000000007"))
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 1
    assert "does not match its name" in proc.stderr
    assert not (spool / "wal" / SEG).exists() and leftovers(spool) == []


def test_truncated_segment_is_refused(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    path = src / SEG
    path.write_bytes(segment_bytes(SEG)[: 1 << 20])
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 1 and "is not the segment size" in proc.stderr
    assert not (spool / "wal" / SEG).exists() and leftovers(spool) == []


def test_not_a_wal_file_is_refused(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    path = src / SEG
    path.write_bytes(b"\0" * (16 << 20))
    proc = archive(cfg, path, SEG)
    assert proc.returncode == 1 and "bad WAL page magic" in proc.stderr
    assert leftovers(spool) == []


def test_history_backup_and_partial_files(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    (src / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
    (src / f"{SEG}.00000028.backup").write_text("START WAL LOCATION: 0/3000028\n")
    write_segment(src, SEG)
    os.rename(src / SEG, src / f"{SEG}.partial")
    for name in ("00000002.history", f"{SEG}.00000028.backup", f"{SEG}.partial"):
        proc = archive(cfg, src / name, name)
        assert proc.returncode == 0, (name, proc.stderr)
        assert (spool / "wal" / name).read_bytes() == (src / name).read_bytes()


def test_unwritable_spool_fails_without_leftovers(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    (spool / "wal").mkdir()
    os.chmod(spool / "wal", 0o755)  # owned by root: postgres cannot write
    path = write_segment(src, SEG)
    chown_pg(src)
    os.chmod(src.parent, 0o755)
    proc = archive(cfg, path, SEG, user="postgres")
    assert proc.returncode == 1, proc.stderr
    assert "Permission denied" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (spool / "wal" / SEG).exists() and leftovers(spool) == []


def test_full_disk_fails_without_leftovers(setup: tuple[Path, Path, Path], workdir: Path) -> None:
    cfg, _spool, src = setup
    tiny = workdir / "tiny"
    tiny.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(tiny)],
            check=False,
            capture_output=True,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        write_toml(cfg, {"cluster": "unit", "spool_dir": str(tiny)})
        path = write_segment(src, SEG)
        proc = archive(cfg, path, SEG)
        assert proc.returncode == 1
        assert "full" in proc.stderr and proc.stderr.count("\n") == 1
        assert not (tiny / "wal" / SEG).exists()
        assert [p.name for p in (tiny / "wal").iterdir()] == []
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_bad_config_is_one_line_exit_2(setup: tuple[Path, Path, Path], workdir: Path) -> None:
    _cfg, _spool, src = setup
    path = write_segment(src, SEG)
    missing = archive(workdir / "nope.toml", path, SEG)
    assert missing.returncode == 2 and "not found" in missing.stderr
    broken = workdir / "broken.toml"
    broken.write_text("spool_dir = [unclosed\n")
    proc = archive(broken, path, SEG)
    assert proc.returncode == 2 and "invalid TOML" in proc.stderr and proc.stderr.count("\n") == 1


def test_env_overrides_spool_dir(setup: tuple[Path, Path, Path], workdir: Path) -> None:
    cfg, spool, src = setup
    other = workdir / "other-spool"
    path = write_segment(src, SEG)
    assert archive(cfg, path, SEG, env={"PGVAULT_SPOOL_DIR": str(other)}).returncode == 0
    assert (other / "wal" / SEG).exists() and not (spool / "wal" / SEG).exists()


def test_archive_path_stays_light(setup: tuple[Path, Path, Path]) -> None:
    """Invariant 2: no pydantic, pika, boto3 (nor typer/rich) on the archive path."""
    cfg, _spool, src = setup
    path = write_segment(src, SEG)
    code = (
        "import sys\n"
        f"sys.argv = ['pgvault', '--config', {str(cfg)!r}, 'wal-archive', {str(path)!r}, {SEG!r}]\n"
        "from pgvault.__main__ import main\n"
        "rc = main()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pydantic', 'pika', 'boto3', 'botocore', 'typer', 'rich', 'zstandard', 'sqlite_utils'})\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 []", out.stdout + out.stderr


def alerts_of(spool: Path) -> list[dict[str, str]]:
    return [json.loads(p.read_text()) for p in sorted((spool / "alerts").glob("*.json"))]


def test_segment_of_another_cluster_is_refused(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    ours = write_segment(src, SEG, sysid=111)
    assert archive(cfg, ours, SEG).returncode == 0
    assert "system_identifier=111" in (spool / "IDENTITY").read_text()
    other_name = "000000010000000000000004"
    foreign = write_segment(src, other_name, sysid=222)
    proc = archive(cfg, foreign, other_name)
    assert proc.returncode == 1
    assert "belongs to database system 222" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (spool / "wal" / other_name).exists() and leftovers(spool) == []
    assert [a["check"] for a in alerts_of(spool)] == ["wal_archive_foreign"]


def test_new_timeline_needs_its_history_file_first(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    assert archive(cfg, write_segment(src, SEG), SEG).returncode == 0
    tli2 = "000000020000000000000004"
    early = archive(cfg, write_segment(src, tli2), tli2)
    assert early.returncode == 1 and "history file must come first" in early.stderr
    (src / "00000003.history").write_text("1\t0/3000000\tx\n2\t0/4000000\ty\n")
    orphan = archive(cfg, src / "00000003.history", "00000003.history")
    assert orphan.returncode == 1 and "does not know" in orphan.stderr
    (src / "00000002.history").write_text("1\t0/4000000\tno recovery target specified\n")
    assert archive(cfg, src / "00000002.history", "00000002.history").returncode == 0
    assert archive(cfg, src / tli2, tli2).returncode == 0
    assert "timelines=1,2" in (spool / "IDENTITY").read_text()
    checks = [a["check"] for a in alerts_of(spool)]
    assert checks == ["wal_archive_foreign", "wal_archive_foreign", "new_timeline"]


def test_retry_after_a_crash_between_publish_and_lineage_repairs_it(
    setup: tuple[Path, Path, Path],
) -> None:
    """An earlier attempt published 00000002.history and died before recording timeline 2
    (or its checksum file): PostgreSQL's retry must repair both, not just say duplicate."""
    cfg, spool, src = setup
    assert archive(cfg, write_segment(src, SEG), SEG).returncode == 0
    (src / "00000002.history").write_text("1\t0/4000000\tno recovery target specified\n")
    (spool / "wal" / "00000002.history").write_bytes((src / "00000002.history").read_bytes())
    assert "timelines=1\n" in (spool / "IDENTITY").read_text()
    assert archive(cfg, src / "00000002.history", "00000002.history").returncode == 0
    assert "timelines=1,2" in (spool / "IDENTITY").read_text()
    assert (spool / "wal" / "00000002.history.sha256").exists()
    tli2 = "000000020000000000000004"
    assert archive(cfg, write_segment(src, tli2), tli2).returncode == 0


def test_malformed_history_is_one_line(setup: tuple[Path, Path, Path]) -> None:
    cfg, spool, src = setup
    assert archive(cfg, write_segment(src, SEG), SEG).returncode == 0
    (src / "00000002.history").write_bytes(b"\xff\xfe garbage\n")
    proc = archive(cfg, src / "00000002.history", "00000002.history")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert not (spool / "wal" / "00000002.history").exists()
