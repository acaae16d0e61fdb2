"""storage.verified: the one verified-read path, against a local store and moto's S3.

Objects are encoded and described exactly as the upload stage does (encode_file +
objmeta.build), then read back through read_verified / fetch_verified.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from pgvault.errors import EncryptionError, IntegrityError, ObjectMissing, Superseded
from pgvault.schemas import FileInfo
from pgvault.storage import ObjectStore, objmeta
from pgvault.storage.codec import Encoding, encode_file
from pgvault.storage.verified import Expected, fetch_verified, read_verified

KEY = "pg/c/wal/00000001/000000010000000000000003.zst"
NAME = "000000010000000000000003"


def upload(
    store: ObjectStore,
    tmp_path: Path,
    data: bytes,
    *,
    level: int = 3,
    recipients: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
) -> FileInfo:
    """Encode and store `data` the way the upload stage does; the catalog's FileInfo."""
    src = tmp_path / f"src-{os.urandom(4).hex()}"
    src.write_bytes(data)
    out = src.with_suffix(".zst")
    encoding, stored, content = encode_file(
        src, out, compress=True, level=level, recipients=recipients
    )
    original = FileInfo(name=NAME, size=content.size, sha256=content.sha256)
    meta = objmeta.build(
        kind="wal",
        name=NAME,
        original=original,
        encoding=encoding,
        stored=stored,
        recipients=recipients,
    )
    store.put_file(KEY, out, {k: v for k, v in meta.items() if k not in drop})
    return original.model_copy(
        update={
            "key": KEY,
            "stored_size": stored.size,
            "stored_sha256": stored.sha256,
            "codec": encoding.codec,
            "encryption": encoding.encryption,
        }
    )


def test_catalogued_object_is_decoded_and_proven(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(1 << 16) * 8
    f = upload(store, tmp_path, data)
    sink = io.BytesIO()
    result = read_verified(store, KEY, Expected.of_file(f), sink)
    assert sink.getvalue() == data
    assert result.content is not None and result.content.sha256 == f.sha256
    assert result.stored.sha256 == f.stored_sha256 and result.encoding == Encoding("zstd", "none")
    dest = tmp_path / "restored" / NAME
    dest.parent.mkdir()
    fetch_verified(store, KEY, Expected.of_file(f), dest, advance=lambda _n: None)
    assert dest.read_bytes() == data and os.listdir(dest.parent) == [NAME]


def test_without_a_catalog_row_the_metadata_is_the_expectation(
    store: ObjectStore, tmp_path: Path
) -> None:
    """The drift this module removed: with no catalog row, wal-restore checked only the
    content. The stored bytes are now proven against the metadata's sha256 too."""
    data = b"WAL page " * 20000
    f = upload(store, tmp_path, data)
    assert read_verified(store, KEY, Expected(), None).content is not None
    # same content, different stored bytes (another level), the first upload's metadata
    src = tmp_path / "again"
    src.write_bytes(data)
    encode_file(src, tmp_path / "again.zst", compress=True, level=19)
    meta = store.head(KEY)
    assert meta is not None
    store.put_file(KEY, tmp_path / "again.zst", meta.metadata)
    with pytest.raises(IntegrityError, match="stored bytes do not match"):
        read_verified(store, KEY, Expected(), io.BytesIO())
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError):
        fetch_verified(store, KEY, Expected(), dest)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the catalog's expectation catches it as well
    with pytest.raises(IntegrityError):
        read_verified(store, KEY, Expected.of_file(f), None)


def test_nothing_to_check_against_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    upload(store, tmp_path, b"x" * 5000, drop=("sha256", "content-sha256"))
    with pytest.raises(IntegrityError, match="no sha256 to check"):
        read_verified(store, KEY, Expected(), io.BytesIO())


def test_content_mismatch_leaves_no_file(store: ObjectStore, tmp_path: Path) -> None:
    f = upload(store, tmp_path, b"y" * 5000)
    wrong = Expected(sha256=hashlib.sha256(b"other").hexdigest(), size=5000)
    dest = tmp_path / "out" / NAME
    dest.parent.mkdir()
    with pytest.raises(IntegrityError, match="decoded content does not match"):
        fetch_verified(store, KEY, wrong, dest)
    assert os.listdir(dest.parent) == []
    short = f.model_copy(update={"size": f.size - 1})
    with pytest.raises(IntegrityError):
        read_verified(store, KEY, Expected.of_file(short), None)


def test_missing_object(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir(exist_ok=True)  # the local store exists, the object not
    with pytest.raises(ObjectMissing):
        read_verified(store, KEY, Expected(sha256="0" * 64), None)


def test_replaced_by_a_newer_upload_of_the_same_content(store: ObjectStore, tmp_path: Path) -> None:
    data = b"z" * 30000
    old = upload(store, tmp_path, data)
    upload(store, tmp_path, data, level=19)
    with pytest.raises(Superseded) as caught:
        read_verified(store, KEY, Expected.of_file(old), None)
    assert isinstance(caught.value, IntegrityError)  # anyone but verify: a mismatch


def test_encrypted_without_identity(store: ObjectStore, tmp_path: Path) -> None:
    from pgvault.keys import generate
    from pgvault.storage.codec import load_identities

    recipient = generate(tmp_path / "id.txt")
    data = b"secret row " * 3000
    f = upload(store, tmp_path, data, recipients=(recipient,))
    result = read_verified(store, KEY, Expected.of_file(f), None)  # stored bytes only
    assert result.content is None and result.stored.sha256 == f.stored_sha256
    with pytest.raises(EncryptionError):
        read_verified(store, KEY, Expected.of_file(f), io.BytesIO())
    sink = io.BytesIO()
    read_verified(store, KEY, Expected(), sink, load_identities(tmp_path / "id.txt"))
    assert sink.getvalue() == data
    # no stored sha256 anywhere and no identity: nothing could be proven
    upload(store, tmp_path, data, recipients=(recipient,), drop=("sha256",))
    with pytest.raises(IntegrityError, match="cannot be decrypted"):
        read_verified(store, KEY, Expected(), None)
