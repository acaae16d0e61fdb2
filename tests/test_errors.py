"""One error hierarchy: every pgvault error in pgvault/errors.py, permanent ones not
retried, and bugs in base backup verification surfacing as bugs, not as damage."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from pgvault import errors
from pgvault.catalog.db import CatalogDB
from pgvault.errors import BackupError, CatalogError, ConfigError, PgvaultError
from pgvault.producers.basebackup_verify import load_manifest, verify_base_tar


def test_every_error_lives_in_the_one_hierarchy() -> None:
    for name in ("Superseded", "StateError", "ChannelError", "ManifestError"):
        cls = getattr(errors, name)
        assert issubclass(cls, PgvaultError) and cls.__module__ == "pgvault.errors", name
    assert errors.ChannelError.transient and errors.StateError.transient
    assert issubclass(errors.StateError, CatalogError)
    assert not errors.ManifestError.transient and not errors.Superseded.transient


def test_a_catalog_of_another_cluster_is_a_permanent_config_error(tmp_path: Path) -> None:
    CatalogDB(tmp_path / "c.sqlite", "one").close()
    with pytest.raises(CatalogError, match="belongs to cluster 'one'") as info:
        CatalogDB(tmp_path / "c.sqlite", "two")
    assert isinstance(info.value, ConfigError)
    assert info.value.transient is False  # a worker dead-letters instead of retrying
    assert info.value.exit_code == 2
    assert CatalogError.transient  # a busy catalog stays worth retrying


def _backup_manifest(path: Path, body: dict[str, object]) -> None:
    text = json.dumps(body, indent=1)[:-2] + ",\n"
    text += f'"Manifest-Checksum": "{hashlib.sha256(text.encode()).hexdigest()}"}}\n'
    path.write_text(text)


def zst_tar(path: Path, members: dict[str, bytes]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))


GOOD = {
    "PostgreSQL-Backup-Manifest-Version": 1,
    "Files": [
        {
            "Path": "PG_VERSION",
            "Size": 3,
            "Checksum-Algorithm": "SHA256",
            "Checksum": hashlib.sha256(b"15\n").hexdigest(),
        }
    ],
    "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
}


def test_base_backup_verification_failures_are_backup_errors(tmp_path: Path) -> None:
    man = tmp_path / "backup_manifest"
    _backup_manifest(man, GOOD)
    manifest = load_manifest(man)
    zst_tar(tmp_path / "base.tar.zst", {"PG_VERSION": b"15\n"})
    assert verify_base_tar(tmp_path / "base.tar.zst", manifest) == 1

    zst_tar(tmp_path / "bad.tar.zst", {"PG_VERSION": b"14\n"})
    with pytest.raises(BackupError, match="does not match backup_manifest"):
        verify_base_tar(tmp_path / "bad.tar.zst", manifest)
    (tmp_path / "cut.tar.zst").write_bytes((tmp_path / "base.tar.zst").read_bytes()[:20])
    with pytest.raises(BackupError, match="failed verification"):
        verify_base_tar(tmp_path / "cut.tar.zst", manifest)

    # a checksummed backup_manifest that lacks what pgvault reads is refused at load
    for broken in ({**GOOD, "Files": [{"Size": 3}]}, {**GOOD, "WAL-Ranges": [{"Timeline": 1}]}):
        _backup_manifest(man, broken)
        with pytest.raises(BackupError, match="backup_manifest"):
            load_manifest(man)
    man.write_text('{"Files": [], "Manifest-Checksum": "0"}')
    with pytest.raises(BackupError, match="checksum does not match"):
        load_manifest(man)


def test_a_bug_in_verification_is_not_reported_as_damage(tmp_path: Path) -> None:
    """A KeyError from pgvault's own code is a bug: it must not read as "failed
    verification" (which would blame the backup and hide the bug)."""
    zst_tar(tmp_path / "base.tar.zst", {"PG_VERSION": b"15\n"})
    with pytest.raises(KeyError):
        verify_base_tar(tmp_path / "base.tar.zst", {"not": "what load_manifest returns"})
