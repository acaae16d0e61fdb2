"""Object stores (local directory and S3 over HTTP via moto's server) and the codec."""

from __future__ import annotations

import io
import os
from pathlib import Path

import boto3
import pytest

from pgvault.config import StorageSettings
from pgvault.errors import IntegrityError, ObjectMissing, StoreUnavailable
from pgvault.storage import ObjectStore, open_store
from pgvault.storage.codec import Encoding, decode_stream, encode_file, sha256_file
from pgvault.storage.layout import Layout
from tests.conftest import make_bucket


def test_put_head_read_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello" * 1000)
    store.put_file("pg/c/wal/00000001/x.zst", src, {"sha256": "ab", "pgvault-kind": "wal"})
    store.put_bytes("pg/c/logical/db/1/manifest.json", b"{}", {})
    info = store.head("pg/c/wal/00000001/x.zst")
    assert info is not None and info.size == 5000 and info.metadata["sha256"] == "ab"
    assert store.get_bytes("pg/c/wal/00000001/x.zst") == src.read_bytes()
    assert [o.key for o in store.list("pg/c/")] == [
        "pg/c/logical/db/1/manifest.json",
        "pg/c/wal/00000001/x.zst",
    ]
    assert [o.key for o in store.list("pg/c/wal/")] == ["pg/c/wal/00000001/x.zst"]
    store.delete("pg/c/wal/00000001/x.zst")
    store.delete("pg/c/wal/00000001/x.zst")  # idempotent
    assert store.head("pg/c/wal/00000001/x.zst") is None
    with pytest.raises(ObjectMissing), store.open_read("pg/c/wal/00000001/x.zst"):
        pass


def test_s3_multipart_uses_equal_parts(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_endpoint)
    store = open_store(
        StorageSettings(
            type="s3",
            endpoint_url=s3_endpoint,
            bucket=bucket,
            region="us-east-1",
            path_style=True,
            part_size_mb=5,
        )
    )
    src = tmp_path / "big"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    store.put_file("k", src, {"sha256": "x"})
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="k", PartNumber=1)
    assert head["ContentLength"] == 5 * 1024 * 1024  # first part is exactly part_size
    assert head["PartsCount"] == 3  # 5 + 5 + 2 MiB
    assert store.get_bytes("k") == src.read_bytes()


def test_unreachable_s3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # credentials present (it used to borrow the moto fixture's): the endpoint is the problem
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = open_store(
        StorageSettings(
            type="s3",
            endpoint_url="http://127.0.0.1:9",
            bucket="b",
            region="us-east-1",
            path_style=True,
        )
    )
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.head("x")


@pytest.mark.parametrize("compress", [True, False])
def test_codec_round_trip_and_corruption(tmp_path: Path, compress: bool) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(10000) + b"z" * 300000)
    out = tmp_path / "out"
    encoding, stored, content = encode_file(src, out, compress=compress)
    assert content == sha256_file(src)
    assert stored == sha256_file(out)
    sink = io.BytesIO()
    with out.open("rb") as fh:
        s2, c2 = decode_stream(fh, sink, encoding)
    assert (s2, c2) == (stored, content) and sink.getvalue() == src.read_bytes()
    if compress:
        bad = bytearray(out.read_bytes())
        bad[len(bad) // 2] ^= 0x40
        with pytest.raises(IntegrityError):
            decode_stream(io.BytesIO(bytes(bad)), None, Encoding("zstd", "none"))


def test_layout_keys_round_trip() -> None:
    lay = Layout("postgres", "main")
    cases = [
        (
            "wal",
            "00000002000000010000003F",
            "00000002000000010000003F",
            "postgres/main/wal/00000002/00000002000000010000003F.zst",
        ),
        (
            "history",
            "00000002.history",
            "00000002.history",
            "postgres/main/wal/00000002/00000002.history",
        ),
        (
            "logical",
            "medusa_production/20261124T000000Z",
            "medusa_production.dump",
            "postgres/main/logical/medusa_production/20261124T000000Z/medusa_production.dump",
        ),
        (
            "physical",
            "20261124T020000Z",
            "base.tar.zst",
            "postgres/main/physical/20261124T020000Z/base.tar.zst",
        ),
    ]
    for kind, name, filename, key in cases:
        assert lay.key(kind, name, filename) == key
        assert lay.parse(key) == (kind, name, filename)
    assert lay.parse("postgres/other/wal/00000001/000000010000000000000001.zst") is None
    assert lay.parse("postgres/main/wal/00000001/junk") is None


def test_age_round_trip_wrong_identity_and_tampering(tmp_path: Path) -> None:
    import pyrage

    from pgvault.errors import EncryptionError
    from pgvault.keys import generate

    recipient = generate(tmp_path / "id.txt")
    other = generate(tmp_path / "other.txt")
    assert recipient.startswith("age1") and recipient != other
    assert oct((tmp_path / "id.txt").stat().st_mode & 0o777) == "0o600"
    from pgvault.storage.codec import load_identities

    ident = load_identities(tmp_path / "id.txt")
    src = tmp_path / "src"
    src.write_bytes(b"CANARY-row " * 5000)
    out = tmp_path / "out"
    encoding, _stored, content = encode_file(src, out, compress=True, recipients=[recipient])
    assert encoding == Encoding("zstd", "age") and b"CANARY" not in out.read_bytes()
    sink = io.BytesIO()
    with out.open("rb") as fh:
        assert decode_stream(fh, sink, encoding, ident)[1] == content
    assert sink.getvalue() == src.read_bytes()
    with pytest.raises(EncryptionError, match="no given age identity"), out.open("rb") as fh:
        decode_stream(fh, None, encoding, load_identities(tmp_path / "other.txt"))
    with pytest.raises(EncryptionError, match="identity_file"), out.open("rb") as fh:
        decode_stream(fh, None, encoding, [])
    bad = bytearray(out.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(IntegrityError):
        decode_stream(io.BytesIO(bytes(bad)), None, encoding, ident)
    assert isinstance(ident[0], pyrage.x25519.Identity)
