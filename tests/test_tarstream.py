"""The streaming tar reader behind proven extraction: what it accepts (PostgreSQL's
ustar, Python's pax and GNU long names) and what it refuses, with the bytes on disk
checked after each extraction."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from pgvault.errors import RestoreError
from pgvault.restore.proven_extract import Proof, extract_proven

LONG = "base/16384/" + "d" * 120 + "/" + "f" * 110  # over ustar's 100 + 155


def tar_zst(path: Path, members: list[tuple[str, bytes | None]], fmt: int) -> bytes:
    """members: (name, data) files, (name, None) directories; returns the raw tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return raw


def manifest_for(path: Path, files: dict[str, bytes]) -> Proof:
    """A backup_manifest as PostgreSQL writes it (its own checksum last)."""
    entries = [
        {
            "Path": name,
            "Size": len(data),
            "Checksum-Algorithm": "SHA256",
            "Checksum": hashlib.sha256(data).hexdigest(),
        }
        for name, data in files.items()
    ]
    ranges = [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]
    body = (
        '{"PostgreSQL-Backup-Manifest-Version": 1,\n'
        f'"Files": {json.dumps(entries)},\n"WAL-Ranges": {json.dumps(ranges)},\n'
    )
    checksum = hashlib.sha256(body.encode()).hexdigest()
    path.write_text(body + f'"Manifest-Checksum": "{checksum}"}}\n')
    return Proof.of(path)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_member_lands_proven_with_its_bytes(tmp_path: Path, fmt: int) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB: more than one 4 MiB read
    files = {"PG_VERSION": b"15\n", "base/1/1259": big, "global/pg_control": b"c" * 8192}
    if fmt != tarfile.USTAR_FORMAT:
        files[LONG] = b"long name"
    members: list[tuple[str, bytes | None]] = [("base", None), ("base/1", None)]
    members += list(files.items())
    tar_zst(tmp_path / "a.tar.zst", members, fmt)
    proof = manifest_for(tmp_path / "backup_manifest", files)
    count = extract_proven(tmp_path / "a.tar.zst", tmp_path / "out", proof)
    assert count == len(members)
    assert proof.complete
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data
        assert (tmp_path / "out" / name).stat().st_mtime == 1_700_000_000


def test_a_damaged_or_truncated_stream_is_refused(tmp_path: Path) -> None:
    files = {"base/1/1": b"x" * 5000, "base/1/2": b"y" * 5000}
    raw = tar_zst(tmp_path / "ok.tar.zst", list(files.items()), tarfile.USTAR_FORMAT)
    proof = manifest_for(tmp_path / "backup_manifest", files)
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(zstandard.ZstdCompressor().compress(raw[:7000]))
    with pytest.raises(RestoreError, match="truncated"):
        extract_proven(cut, tmp_path / "out1", proof)
    header = bytearray(raw)
    header[5] ^= 0x01  # inside the first header's name: its checksum no longer matches
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(bytes(header)))
    with pytest.raises(RestoreError, match="checksum"):
        extract_proven(bad, tmp_path / "out2", proof)
    twice = tmp_path / "twice.tar.zst"
    tar_zst(twice, [("base/1/1", files["base/1/1"])] * 2, tarfile.USTAR_FORMAT)
    with pytest.raises(RestoreError, match="twice"):
        extract_proven(twice, tmp_path / "out3", proof)
    data = bytearray(raw)
    data[512 + 100] ^= 0xFF  # a data byte of base/1/1: the member's proof fails
    changed = tmp_path / "changed.tar.zst"
    changed.write_bytes(zstandard.ZstdCompressor().compress(bytes(data)))
    with pytest.raises(RestoreError, match="SHA-256"):
        extract_proven(changed, tmp_path / "out4", proof)


@pytest.mark.parametrize(
    ("kind", "match"),
    [(tarfile.SYMTYPE, "refusing link"), (tarfile.LNKTYPE, "refusing link"),
     (tarfile.FIFOTYPE, "refusing special"), (tarfile.CHRTYPE, "refusing special")],
)  # fmt: skip
def test_links_and_special_files_are_refused(tmp_path: Path, kind: bytes, match: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pg_tblspc/16400")
        info.type, info.linkname = kind, "/srv/production"
        tar.addfile(info)
    archive = tmp_path / "l.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    proof = manifest_for(tmp_path / "backup_manifest", {})
    with pytest.raises(RestoreError, match=match):
        extract_proven(archive, tmp_path / "out", proof)
    assert not (tmp_path / "out" / "pg_tblspc" / "16400").exists()


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "base/../../evil"])
def test_paths_outside_the_target_are_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "e.tar.zst"
    tar_zst(archive, [(name, b"no")], tarfile.PAX_FORMAT)
    with pytest.raises(RestoreError, match="refusing"):
        extract_proven(archive, tmp_path / "out", manifest_for(tmp_path / "m", {}))
    assert not (tmp_path / "evil").exists()


def test_hostile_headers_fail_cleanly(tmp_path: Path) -> None:
    """A pax record of length 0 (a reader that loops forever on it), and the same file
    spelled twice (`a//b`, `a/./b`) to overwrite a proven member: refused."""
    blob = b"0 path=x\n"
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, len(blob)
    member = tarfile.TarInfo("base/1/1")
    member.size = 1
    raw = (
        pax.tobuf(tarfile.USTAR_FORMAT)
        + blob.ljust(512, b"\0")
        + member.tobuf(tarfile.USTAR_FORMAT)
        + b"x".ljust(512, b"\0")
        + bytes(1024)
    )
    archive = tmp_path / "pax.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(raw))
    proof = manifest_for(tmp_path / "backup_manifest", {"base/1/1": b"x"})
    with pytest.raises(RestoreError, match="pax header"):
        extract_proven(archive, tmp_path / "out", proof)
    for spelling in ("base/1//1", "base/1/./1"):
        twice = tmp_path / "twice.tar.zst"
        tar_zst(twice, [("base/1/1", b"x"), (spelling, b"y")], tarfile.USTAR_FORMAT)
        with pytest.raises(RestoreError, match="twice"):
            extract_proven(twice, tmp_path / "out2", manifest_for(tmp_path / "m2", {}))
