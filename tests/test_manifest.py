"""manifest.json: the schema (version 2) producers write and every reader validates, and
the two version-1 shapes still in stores, read through the converter."""

from __future__ import annotations

import json

import pytest

from pgvault.errors import ManifestError
from pgvault.schemas.manifest import (
    MANIFEST_VERSION,
    BaseBackupCheck,
    DumpCompression,
    LogicalManifest,
    ManifestFile,
    PhysicalManifest,
    TableCount,
    parse_artifact_manifest,
    parse_logical,
    parse_manifest,
    parse_physical,
    upgrade_v1,
)

SHA_DUMP = "a" * 64
SHA_TABLES = "b" * 64
SHA_BASE = "c" * 64
SHA_WAL = "d" * 64
SHA_PGMAN = "e" * 64

# exactly as producers/logical.py wrote it before version 2 (json.dumps(indent=1))
V1_LOGICAL = """{
 "manifest_version": 1,
 "kind": "logical",
 "cluster": "main",
 "db": "shop",
 "backup_id": "20240501T020000Z",
 "started_at": "2024-05-01T02:00:00.000000Z",
 "snapshot_at": "2024-05-01T02:00:00.120000Z",
 "finished_at": "2024-05-01T02:00:03.500000Z",
 "duration_s": 3.5,
 "source": "127.0.0.1:5432",
 "server_version": "15.6 (Debian 15.6-1.pgdg120+2)",
 "server_version_num": 150006,
 "pg_dump_version": "15.6",
 "snapshot": "00000003-00000002-1",
 "format": "custom",
 "compression": {
  "method": "gzip",
  "level": 6
 },
 "database": {
  "encoding": "UTF8",
  "collate": "C.UTF-8",
  "ctype": "C.UTF-8",
  "owner": "shop_owner"
 },
 "dump_size": 12345,
 "dump_sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
 "table_count": 2,
 "row_count": 5,
 "files": [
  {
   "name": "shop.dump",
   "size": 12345,
   "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  }
 ],
 "tables": [
  {
   "schema": "shop",
   "name": "orders",
   "rows": 3
  },
  {
   "schema": "shop",
   "name": "pages",
   "rows": 2
  }
 ]
}"""

# an encrypted v1 dump: row counts in tables.json, named by tables_file (and an empty
# `database`, as written when pg_database returned nothing)
V1_LOGICAL_ENCRYPTED = """{
 "manifest_version": 1, "kind": "logical", "cluster": "main", "db": "shop",
 "backup_id": "20240501T020000Z", "started_at": "2024-05-01T02:00:00.000000Z",
 "snapshot_at": "2024-05-01T02:00:00.120000Z", "finished_at": "2024-05-01T02:00:03.500000Z",
 "duration_s": 3.5, "source": "db.example:5432", "server_version": "16.2",
 "server_version_num": 160002, "pg_dump_version": "16.2", "snapshot": "00000003-00000002-1",
 "format": "custom", "compression": {"method": "zstd", "level": 3}, "database": {},
 "dump_size": 100,
 "dump_sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
 "table_count": 2, "row_count": 5,
 "files": [
  {"name": "shop.dump", "size": 100,
   "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
  {"name": "tables.json", "size": 80,
   "sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}
 ],
 "tables_file": "tables.json"
}"""

# exactly as producers/physical.py wrote it before version 2 (json.dumps(indent=2))
V1_PHYSICAL = """{
  "format": "pgvault-manifest/1",
  "kind": "physical",
  "backup_id": "20240501T030000Z",
  "label": "pgvault-20240501T030000Z",
  "started_at": "2024-05-01T03:00:00.000000Z",
  "finished_at": "2024-05-01T03:00:09.000000Z",
  "duration_s": 9.25,
  "timeline": 1,
  "start_lsn": 50331688,
  "end_lsn": 50332072,
  "start_lsn_text": "0/3000028",
  "end_lsn_text": "0/3000168",
  "start_wal": "000000010000000000000003",
  "stop_wal": "000000010000000000000003",
  "seg_size": 16777216,
  "system_identifier": "7364020102345678901",
  "pg_version": "15.6 (Debian 15.6-1.pgdg120+2)",
  "pg_version_num": 150006,
  "data_size": 23000000,
  "size": 3500000,
  "verification": {
    "base_files_sha256_checked": 970,
    "wal_segments": [
      "000000010000000000000003"
    ]
  },
  "files": [
    {
      "name": "base.tar.zst",
      "size": 3400000,
      "sha256": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    },
    {
      "name": "pg_wal.tar.zst",
      "size": 90000,
      "sha256": "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
    },
    {
      "name": "backup_manifest",
      "size": 10000,
      "sha256": "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
    }
  ]
}"""


def test_v1_logical_is_read_as_version_2() -> None:
    m = parse_manifest(V1_LOGICAL.encode(), "logical/shop/20240501T020000Z")
    assert isinstance(m, LogicalManifest)
    assert m.manifest_version == MANIFEST_VERSION == 2
    assert (m.kind, m.db, m.backup_id, m.cluster) == ("logical", "shop", "20240501T020000Z", "main")
    assert m.format == "custom" and m.compression.method == "gzip" and m.compression.level == 6
    assert m.database.owner == "shop_owner" and m.database.encoding == "UTF8"
    assert m.dump_name == "shop.dump" and m.file("shop.dump") is not None
    assert m.tables is not None
    assert [(t.schema_name, t.name, t.rows) for t in m.tables] == [
        ("shop", "orders", 3),
        ("shop", "pages", 2),
    ]
    # the catalog's meta: every v1 fact but the bulky lists, under the same keys
    v1 = json.loads(V1_LOGICAL)
    expected = {k: v for k, v in v1.items() if k not in ("files", "tables")}
    assert m.summary() == expected | {"manifest_version": 2}


def test_v1_encrypted_logical_names_its_tables_file() -> None:
    m = parse_logical(V1_LOGICAL_ENCRYPTED, "logical/shop/20240501T020000Z")
    assert m.tables is None and m.tables_file == "tables.json"
    assert m.dump_name == "shop.dump"
    assert m.database.encoding is None
    loaded = m.with_tables(
        json.dumps({"tables": [{"schema": "shop", "name": "orders", "rows": 5}]}), "x"
    )
    assert loaded.tables is not None and loaded.tables[0].rows == 5
    with pytest.raises(ManifestError, match=r"invalid tables\.json"):
        m.with_tables(b'{"tables": [{"schema": "shop"}]}', "logical/shop/1")


def test_v1_physical_is_read_as_version_2() -> None:
    m = parse_manifest(V1_PHYSICAL, "physical/20240501T030000Z")
    assert isinstance(m, PhysicalManifest)
    assert m.manifest_version == 2
    assert (m.timeline, m.start_lsn, m.end_lsn) == (1, 50331688, 50332072)
    assert m.start_wal == m.stop_wal == "000000010000000000000003"
    assert m.verification.base_files_sha256_checked == 970
    assert [f.name for f in m.files] == ["base.tar.zst", "pg_wal.tar.zst", "backup_manifest"]
    summary = m.summary()
    assert "format" not in summary and summary["manifest_version"] == 2
    assert summary["system_identifier"] == "7364020102345678901"
    assert parse_physical(V1_PHYSICAL, "p").backup_id == "20240501T030000Z"


def test_upgrade_v1_leaves_other_documents_alone() -> None:
    v2 = {"manifest_version": 2, "kind": "logical"}
    assert upgrade_v1(v2) == v2
    # a logical manifest's "format" is pg_dump's format, never a version marker
    assert upgrade_v1({"kind": "logical", "format": "custom"}) == {
        "kind": "logical",
        "format": "custom",
    }
    up = upgrade_v1(json.loads(V1_PHYSICAL))
    assert up["manifest_version"] == 2 and "format" not in up


def _logical() -> LogicalManifest:
    return LogicalManifest(
        cluster="main",
        db="shop",
        backup_id="20240601T000000Z",
        started_at="2024-06-01T00:00:00.000000Z",
        snapshot_at="2024-06-01T00:00:00.100000Z",
        finished_at="2024-06-01T00:00:01.000000Z",
        duration_s=1.0,
        source="127.0.0.1:5432",
        server_version="15.6",
        server_version_num=150006,
        pg_dump_version="15.6",
        snapshot="00000003-00000002-1",
        compression=DumpCompression(method="gzip", level=6),
        dump_size=10,
        dump_sha256=SHA_DUMP,
        table_count=1,
        row_count=3,
        files=[ManifestFile(name="shop.dump", size=10, sha256=SHA_DUMP)],
        tables=[TableCount(schema_name="shop", name="orders", rows=3)],
    )


def test_version_2_round_trips_through_its_bytes() -> None:
    m = _logical()
    data = json.loads(m.to_json())
    assert data["manifest_version"] == 2 and data["kind"] == "logical"
    assert data["tables"] == [{"schema": "shop", "name": "orders", "rows": 3}]
    assert "tables_file" not in data and "format" in data
    assert parse_manifest(m.to_json(), "x") == m

    p = PhysicalManifest.model_validate(
        upgrade_v1(json.loads(V1_PHYSICAL))
        | {"verification": BaseBackupCheck(base_files_sha256_checked=1, wal_segments=[])}
    )
    assert parse_physical(p.to_json(), "x") == p


def test_unknown_fields_of_the_same_version_are_kept() -> None:
    """A newer producer's optional fact (say a database property) survives a read, so it
    reaches the catalog's meta."""
    data = json.loads(_logical().to_json())
    data["database"]["icu_locale"] = "und"
    data["comment"] = "weekly"
    m = parse_logical(json.dumps(data), "x")
    assert m.summary()["comment"] == "weekly"
    assert m.summary()["database"]["icu_locale"] == "und"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"{not json", r"^logical/shop/1: manifest\.json is not JSON"),
        (b"[]", r"^logical/shop/1: manifest\.json is not a JSON object"),
        (b"{}", r"^logical/shop/1: unknown manifest version \(no manifest_version\)$"),
        (
            json.dumps({"manifest_version": 4, "kind": "logical"}).encode(),
            r"unknown manifest version 4 .*newer pgvault",
        ),
        (
            json.dumps({"format": "pgvault-manifest/9", "kind": "physical"}).encode(),
            r"unknown manifest version \(format 'pgvault-manifest/9'\)",
        ),
        (
            json.dumps({"manifest_version": 2, "kind": "incremental"}).encode(),
            r"^logical/shop/1: invalid manifest\.json: .*",
        ),
    ],
)
def test_unusable_manifests_are_refused_in_one_line(doc: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(doc, "logical/shop/1")
    assert "\n" not in str(info.value)


def test_invalid_fields_are_named() -> None:
    data = json.loads(V1_PHYSICAL)
    data["files"][0]["sha256"] = "nothex"
    with pytest.raises(ManifestError, match=r"invalid manifest\.json: files\.0\.sha256"):
        parse_manifest(json.dumps(data), "physical/1")
    data = json.loads(V1_LOGICAL)
    del data["tables"]
    with pytest.raises(ManifestError, match="tables or tables_file is required"):
        parse_manifest(json.dumps(data), "logical/shop/1")
    data = json.loads(V1_LOGICAL)
    data["tables_file"] = "tables.json"  # named but not among its files
    with pytest.raises(ManifestError, match="not among its files"):
        parse_manifest(json.dumps(data), "logical/shop/1")
    with pytest.raises(ManifestError, match="expected a physical manifest, found logical"):
        parse_physical(V1_LOGICAL, "physical/1")


def test_a_manifest_must_describe_the_artifact_it_sits_in() -> None:
    m = parse_artifact_manifest(V1_LOGICAL, "logical", "shop/20240501T020000Z")
    assert m.artifact_name == "shop/20240501T020000Z"
    assert parse_artifact_manifest(V1_PHYSICAL, "physical", "20240501T030000Z").kind == "physical"
    with pytest.raises(ManifestError, match=r"describes logical/shop/20240501T020000Z$"):
        parse_artifact_manifest(V1_LOGICAL, "logical", "shop/20240502T020000Z")
    with pytest.raises(ManifestError, match=r"^physical/20240501T030000Z: .*describes logical"):
        parse_artifact_manifest(V1_LOGICAL, "physical", "20240501T030000Z")
