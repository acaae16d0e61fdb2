"""The one-pass reader of pg_basebackup's tar stream (pgvault/producers/bbstream.py).

Synthetic streams shaped like PostgreSQL's (ustar, the WAL under pg_wal/, backup_manifest
last with its own checksum) prove the routing and hashing member by member; a real
cluster then backs up through a pg_basebackup whose output is damaged on its way
(a member's byte flipped, the stream cut, the manifest's checksum altered): each run
must fail, leave nothing in the spool and be recorded as failed, and the same cluster
backs up fine once the damage stops.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from pydantic import ValidationError

from pgvault.catalog.runs import last_backup_runs
from pgvault.config import Settings
from pgvault.errors import BackupError
from pgvault.producers.basebackup_verify import check_digests, check_wal_names, parse_manifest
from pgvault.producers.bbstream import StreamTruncated, parse_header, split_stream
from pgvault.storage.codec import Digest
from tests.conftest import EnvFactory
from tests.pgcluster import PG_BIN, chown_pg

SEG = 16 * 1024 * 1024
WAL = "000000010000000000000002"
DATA = {
    "backup_label": b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    "PG_VERSION": b"15\n",
    "base/1/1259": os.urandom(3000) * 7,  # not a multiple of 512: padding is exercised
    "global/pg_control": bytes(8192),
}
WAL_FILES = {f"pg_wal/{WAL}": os.urandom(4096), f"pg_wal/archive_status/{WAL}.done": b""}


def manifest_text(files: dict[str, bytes], *, tamper: bool = False) -> str:
    """A backup_manifest as PostgreSQL writes it: the checksum covers the text before
    the "Manifest-Checksum" key."""
    entries = [
        {
            "Path": path,
            "Size": len(data),
            "Last-Modified": "2026-11-30 00:00:00 GMT",
            "Checksum-Algorithm": "SHA256",
            "Checksum": hashlib.sha256(data).hexdigest(),
        }
        for path, data in files.items()
    ]
    head = (
        '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n'
        + ",\n".join(json.dumps(e) for e in entries)
        + ' ],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", '
        '"End-LSN": "0/2000100" }\n],\n'
    )
    digest = hashlib.sha256(head.encode()).hexdigest()
    if tamper:
        head = head.replace('"Size": 3', '"Size": 4', 1)
    return head + f'"Manifest-Checksum": "{digest}"}}\n'


def stream(
    members: dict[str, bytes] | None = None, manifest: str | None = None, trailer: bool = True
) -> bytes:
    """A tar stream in pg_basebackup's shape: directories, data files, the WAL, then
    backup_manifest."""
    members = {**DATA, **WAL_FILES} if members is None else members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("base", "base/1", "global", "pg_wal", "./pg_wal/archive_status"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        text = manifest_text(DATA | WAL_FILES) if manifest is None else manifest
        info = tarfile.TarInfo("backup_manifest")
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    raw = buf.getvalue()
    return raw if trailer else raw.rstrip(b"\0")


def members_of(path: Path) -> dict[str, bytes]:
    with path.open("rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            out = {}
            for m in tar:
                src = tar.extractfile(m) if m.isfile() else None
                out[m.name] = src.read() if src is not None else b"<dir>"
            return out


def split(data: bytes, out: Path) -> Any:
    return split_stream(io.BytesIO(data).read, out, level=3, threads=2)


def test_one_pass_routes_hashes_and_proves_every_member(tmp_path: Path) -> None:
    result = split(stream(), tmp_path)
    manifest = parse_manifest(result.manifest.decode())
    # every data and WAL file hashed in the pass, and all of them match the manifest
    assert result.members == {
        name: Digest(len(data), hashlib.sha256(data).hexdigest())
        for name, data in (DATA | WAL_FILES).items()
    }
    assert check_digests(result.members, manifest, "stream") == len(DATA) + len(WAL_FILES)
    assert check_wal_names(result.wal_files, manifest, SEG) == [WAL]
    # base.tar.zst: the data directory without the WAL files nor backup_manifest
    base = members_of(tmp_path / "base.tar.zst")
    assert {k: v for k, v in base.items() if v != b"<dir>"} == DATA
    assert "pg_wal" in base and "./pg_wal/archive_status" in base
    # pg_wal.tar.zst: the WAL, re-headed relative to pg_wal/ (restore extracts it there)
    assert members_of(tmp_path / "pg_wal.tar.zst") == {
        name.removeprefix("pg_wal/"): data for name, data in WAL_FILES.items()
    }
    # the stored files' digests are those of the bytes on disk
    for name, digest in result.stored.items():
        on_disk = (tmp_path / name).read_bytes()
        assert (digest.size, digest.sha256) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
    assert result.bytes_in == len(stream())


def test_an_unpadded_manifest_as_postgresql_14_writes_it_is_read(tmp_path: Path) -> None:
    """14 injects backup_manifest without padding it, then 1024 zero bytes."""
    raw = stream(trailer=False)
    result = split(raw + bytes(1024), tmp_path)
    assert parse_manifest(result.manifest.decode())["Files"]


def test_a_flipped_byte_in_a_member_fails_against_the_manifest(tmp_path: Path) -> None:
    raw = bytearray(stream())
    at = raw.index(DATA["base/1/1259"][:64])
    raw[at + 100] ^= 0xFF
    result = split(bytes(raw), tmp_path)
    with pytest.raises(BackupError, match=r"base/1/1259: SHA-256 .* does not match"):
        check_digests(result.members, parse_manifest(result.manifest.decode()), "stream")


def test_a_member_the_manifest_lists_must_be_in_the_stream(tmp_path: Path) -> None:
    members = {k: v for k, v in (DATA | WAL_FILES).items() if k != "global/pg_control"}
    result = split(stream(members), tmp_path)
    with pytest.raises(BackupError, match="lacks manifest file global/pg_control"):
        check_digests(result.members, parse_manifest(result.manifest.decode()), "stream")
    members = {k: v for k, v in (DATA | WAL_FILES).items() if not k.endswith(WAL)}
    (tmp_path / "nowal").mkdir()
    result = split(stream(members), tmp_path / "nowal")
    with pytest.raises(BackupError, match=f"lacks WAL segment.*{WAL}"):
        check_wal_names(result.wal_files, parse_manifest(result.manifest.decode()), SEG)


def test_a_truncated_stream_fails_wherever_it_is_cut(tmp_path: Path) -> None:
    raw = stream()
    manifest_at = raw.index(b"backup_manifest\0")
    data_at = raw.index(DATA["base/1/1259"][:64])
    # in a header, in a member's data, in its padding, in the manifest, before the end
    for n, cut in enumerate((100, data_at + 1000, data_at + 21000 + 10, manifest_at + 600)):
        out = tmp_path / str(n)
        out.mkdir()
        with pytest.raises(StreamTruncated, match="ended early"):
            split(raw[:cut], out)


def test_damaged_headers_and_streams_without_a_manifest_fail(tmp_path: Path) -> None:
    raw = bytearray(stream())
    raw[5] ^= 0x01  # first header's name: its checksum no longer matches
    with pytest.raises(BackupError, match="header checksum"):
        split(bytes(raw), tmp_path)
    (tmp_path / "n").mkdir()
    renamed = stream().replace(b"backup_manifest\0", b"backup_manifesX\0")
    with pytest.raises(BackupError, match="header checksum"):
        split(renamed, tmp_path / "n")  # the renamed header's checksum is the old one's
    (tmp_path / "m").mkdir()
    members = {k: v for k, v in (DATA | WAL_FILES).items()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupError, match="without backup_manifest"):
        split(buf.getvalue(), tmp_path / "m")


def test_the_manifest_checksum_is_proven() -> None:
    assert parse_manifest(manifest_text(DATA))["Files"]
    with pytest.raises(BackupError, match="checksum does not match"):
        parse_manifest(manifest_text(DATA, tamper=True))


def test_headers_are_parsed_with_their_checksum() -> None:
    info = tarfile.TarInfo("./pg_wal/archive_status")
    info.type = tarfile.DIRTYPE
    header = info.tobuf(format=tarfile.USTAR_FORMAT)[:512]
    assert parse_header(header) == ("pg_wal/archive_status/", 0, b"5")  # tarfile adds "/"
    info = tarfile.TarInfo("base/1/x")
    info.type = tarfile.FIFOTYPE
    with pytest.raises(BackupError, match="unsupported tar member type"):
        parse_header(info.tobuf(format=tarfile.USTAR_FORMAT)[:512])


# -- a real pg_basebackup whose stream is damaged on its way ------------------------------

CORRUPT = r"""
import sys
mode = open(sys.argv[1]).read().strip()
data = bytearray(sys.stdin.buffer.read())
if mode == "flip":
    at = data.index(b"PG_VERSION\0")
    assert at % 512 == 0
    data[at + 512] ^= 0x01  # the major's first digit
elif mode == "cut":
    data = data[: len(data) // 2]
elif mode == "manifest":
    key = data.index(b'"Manifest-Checksum": "') + 22
    data[key] = ord("0") if data[key] != ord("0") else ord("1")
sys.stdout.buffer.write(data)
"""


def damaging_bin_dir(base: Path) -> tuple[Path, Path]:
    """A bin_dir whose pg_basebackup pipes the real one through CORRUPT (mode in a file);
    every other tool is the real one."""
    bin_dir = base / "damaging-bin"
    bin_dir.mkdir()
    for tool in PG_BIN.iterdir():
        (bin_dir / tool.name).symlink_to(tool)
    (bin_dir / "pg_basebackup").unlink()
    mode = base / "damage-mode"
    mode.write_text("none")
    (base / "corrupt.py").write_text(CORRUPT)
    script = bin_dir / "pg_basebackup"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version|-V) exec {PG_BIN}/pg_basebackup "$@";; esac\n'
        f'{PG_BIN}/pg_basebackup "$@" | /usr/bin/python3 {base}/corrupt.py {mode}\n'
    )
    script.chmod(0o755)
    for path in (bin_dir, mode, base / "corrupt.py"):
        path.chmod(0o755)
    chown_pg(bin_dir, mode, base / "corrupt.py", script)
    return bin_dir, mode


def test_a_damaged_stream_fails_the_backup_and_leaves_nothing(make_env: EnvFactory) -> None:
    env = make_env()
    env.cli("init")
    pg = env.make_pg()
    pg.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
    bin_dir, mode = damaging_bin_dir(env.base)
    env.data["postgres"]["bin_dir"] = str(bin_dir)
    env.write_config()
    physical = env.spool / "physical"
    expected = {
        "flip": "PG_VERSION: SHA-256 in pg_basebackup's stream does not match backup_manifest",
        "cut": "pg_basebackup's tar stream ended early (truncated)",
        "manifest": "backup_manifest checksum does not match its contents",
    }
    for damage, message in expected.items():
        mode.write_text(damage)
        proc = env.cli("backup", "physical", check=False)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr
        assert [p.name for p in physical.iterdir() if p.name != ".lock"] == []
        (run,) = last_backup_runs(env.catalog(), "physical")
        assert run.result == "failed" and message in (run.error or "")
    # the same cluster, the same wrapper, no damage: the backup is taken and proven
    mode.write_text("none")
    out = env.cli_json("backup", "physical", "--jobs", "1")
    assert out["ok"] is True
    kept = [p for p in physical.iterdir() if p.name != ".lock"]
    assert [p.name for p in kept] == [out["backup_id"]]
    manifest = json.loads((kept[0] / "manifest.json").read_text())
    assert manifest["verification"]["base_files_sha256_checked"] > 900
    wal = manifest["verification"]["wal_segments"]
    assert (wal[0], wal[-1]) == (manifest["start_wal"], manifest["stop_wal"])
    for entry in manifest["files"]:
        data = (kept[0] / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # the temporary slot that reserved the WAL went with the backup's session
    assert pg.sql("SELECT slot_name FROM pg_replication_slots") == []


def test_a_server_without_a_free_slot_still_backs_up(make_env: EnvFactory) -> None:
    """-Xfetch without the WAL reservation: a warning, and the backup proven as usual."""
    env = make_env()
    env.cli("init")
    env.make_pg({"max_replication_slots": "0"})
    proc = env.cli("backup", "physical", "--json")
    assert "no WAL reservation for the backup" in proc.stderr
    out = json.loads(proc.stdout)
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["verification"]["base_files_sha256_checked"] > 900
    assert manifest["verification"]["wal_segments"]


def test_max_workers_and_jobs_are_bounded(make_env: EnvFactory) -> None:
    """`[physical] max_workers` defaults to min(4, CPUs); 0 is refused in the config and
    on the command line, each in one line with exit 2."""
    assert Settings().physical.max_workers == min(4, os.cpu_count() or 1)
    with pytest.raises(ValidationError):
        Settings(physical={"max_workers": 0})
    env = make_env()
    proc = env.cli("backup", "physical", "--jobs", "0", check=False)
    assert proc.returncode == 2 and "--jobs" in proc.stderr
    env.data["physical"] = {"max_workers": 0}
    env.write_config()
    proc = env.cli("backup", "physical", check=False)
    assert proc.returncode == 2 and "physical.max_workers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
