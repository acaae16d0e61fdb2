"""Client-side encryption with age recipients through the real pipeline (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.logical_data import create_database, fingerprint
from tests.pgcluster import chown_pg
from tests.test_pitr import mark_target, prepare, restore_and_read

pytestmark = pytest.mark.slow


def add_key(env: PgvaultEnv, *, identity_in_config: bool = True) -> Path:
    identity = env.base / "identity.txt"
    recipient = env.cli("keys", "generate", "-o", str(identity)).stdout.strip()
    chown_pg(identity)  # restore_command (wal-restore) runs as postgres and decrypts
    env.data["encryption"] = {"recipients": [recipient]}
    if identity_in_config:
        env.data["encryption"]["identity_file"] = str(identity)
    env.write_config()
    return identity


def objects(env: PgvaultEnv) -> dict[str, tuple[bytes, dict[str, str]]]:
    store = env.store()
    out = {}
    for info in store.list(f"pg/{env.cluster}/"):
        if "/.canary/" in info.key:
            continue
        head = store.head(info.key)
        assert head is not None
        out[info.key] = (store.get_bytes(info.key), dict(head.metadata))
    return out


def readable(data: bytes) -> bytes:
    """What anyone holding the object (no key) can read: the bytes, or their zstd
    decompression when they are a zstd stream."""
    try:
        return data + zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except zstandard.ZstdError:
        return data


def canary_workload(env: PgvaultEnv) -> tuple[Any, bytes]:
    pg = prepare(env)
    canary = f"CANARY-{uuid.uuid4().hex}"
    pg.sql("CREATE TABLE customers (id serial, address text)")
    pg.sql("INSERT INTO customers(address) SELECT %s FROM generate_series(1, 200)", (canary,))
    return pg, canary.encode()


@pytest.mark.parametrize("encrypted", [True, False])
def test_stored_objects_hold_no_plaintext_and_age_cli_decrypts(
    make_env: EnvFactory, encrypted: bool
) -> None:
    env = make_env("s3")
    identity = add_key(env) if encrypted else None
    pg, canary = canary_workload(env)
    env.cli("backup", "physical")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    stored = objects(env)
    leaked = [k for k, (data, _m) in stored.items() if canary in readable(data)]
    if not encrypted:
        # the control: without encryption the row value is readable, so the search can fail
        assert leaked, "expected the canary in unencrypted objects"
        return
    assert leaked == []
    for key, (data, meta) in stored.items():
        if key.endswith("/manifest.json"):
            assert meta["pgvault-encryption"] == "none" and data.startswith(b"{")
        else:
            assert meta["pgvault-encryption"] == "age", key
            assert meta["pgvault-recipients"].startswith("age1")
            assert data.startswith(b"age-encryption.org/v1"), key
    # the standard age tool decrypts a WAL object to the zstd stream of the spool file
    wal_key = next(k for k in stored if "/wal/" in k and k.endswith(".zst"))
    enc = env.base / "object.age"
    enc.write_bytes(stored[wal_key][0])
    plain = subprocess.run(
        ["age", "-d", "-i", str(identity), str(enc)], capture_output=True, check=True
    ).stdout
    name = wal_key.rsplit("/", 1)[1].removesuffix(".zst")
    assert (
        zstandard.ZstdDecompressor().decompressobj().decompress(plain)
        == (env.spool / "wal" / name).read_bytes()
    )


def test_encrypted_pitr_with_identity_and_clean_failure_without(make_env: EnvFactory) -> None:
    env = make_env("local")
    add_key(env)
    pg, _canary = canary_workload(env)
    create_database(pg, "shop", k=2)
    env.data["postgres"]["databases"] = ["shop"]
    env.write_config()
    env.cli("backup", "logical")
    env.cli("backup", "physical")
    target, expected = mark_target(env, pg, "encrypted era")
    # the spool copies would bypass decryption: restore from the store only
    for path in (env.spool / "physical").iterdir():
        os.rename(path, env.base / f"hidden-{path.name}")
    os.rename(env.spool / "logical", env.base / "hidden-logical")
    _result, rows = restore_and_read(env, target, "with-identity")
    assert rows == expected
    # the dump's manifest is plain but holds no table names or counts; those are encrypted
    stored = objects(env)
    manifest_key = next(k for k in stored if "/logical/shop/" in k and k.endswith("manifest.json"))
    manifest = json.loads(stored[manifest_key][0])
    assert "tables" not in manifest and manifest["tables_file"] == "tables.json"
    tables_key = manifest_key.replace("manifest.json", "tables.json")
    assert stored[tables_key][1]["pgvault-encryption"] == "age"
    assert b"customers" not in stored[tables_key][0]
    env.cli("restore", "logical", "--db", "shop", "--target-db", "shop_restored")
    assert fingerprint(pg, "shop_restored") == fingerprint(pg, "shop")
    env.data["encryption"].pop("identity_file")
    env.write_config()
    refused = env.cli(
        "restore", "logical", "--db", "shop", "--target-db", "shop_again", check=False
    )
    assert refused.returncode == 1 and "age-encrypted" in refused.stderr
    for prefix in ("shop_again", "pgvault_restore"):
        assert (
            pg.one("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (prefix + "%",)) == 0
        )
    target_dir = env.base / "without-identity"
    proc = env.cli("restore", "pitr", "--to", target, "--target-dir", str(target_dir), check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("pgvault: error:") and "age-encrypted" in err and "base.tar.zst" in err
    assert not target_dir.exists()


def test_mixed_archive_and_verify_without_identity(make_env: EnvFactory) -> None:
    env = make_env("local")
    pg = prepare(env)
    env.cli("backup", "physical")  # written before encryption was turned on
    pg.sql("INSERT INTO ticks(note) VALUES ('plain era')")
    pg.wait_archived(pg.switch_wal())
    env.drain()
    identity = add_key(env, identity_in_config=False)  # the production host: recipients only
    target, expected = mark_target(env, pg, "encrypted era")
    rows = {r["name"]: r for r in env.wal_rows()}
    encrypted = [r for r in rows.values() if '"encryption": "age"' in r["files"]]
    plain = [r for r in rows.values() if '"encryption": "none"' in r["files"]]
    assert encrypted and plain
    assert all(
        r["state"] == "verified" and '"content_verified": false' in r["meta"] for r in encrypted
    )
    assert all('"content_verified": true' in r["meta"] for r in plain)
    # the restore host has the identity: old plain and new encrypted objects both restore
    env.data["encryption"]["identity_file"] = str(identity)
    env.write_config()
    for path in (env.spool / "wal").iterdir():
        path.unlink()  # force every segment through the store and decryption
    _result, restored = restore_and_read(env, target, "mixed")
    assert restored == expected
    # with the identity, a re-verification proves the content too
    env.cli("catalog", "verify", "--kind", "wal")
    env.drain()
    rows = {r["name"]: r for r in env.wal_rows()}
    assert all('"content_verified": true' in rows[r["name"]]["meta"] for r in encrypted)
