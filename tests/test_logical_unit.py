"""Logical backups without a server: TOC selection, dump selection from a real SQLite
catalog, names, versions and request validation."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgvault import dbname, pgtoc
from pgvault.catalog.artifacts import apply_event
from pgvault.catalog.backups import logical_backups, pick_logical
from pgvault.catalog.db import CatalogDB
from pgvault.config import settings_from_dict
from pgvault.errors import NotRestorable, RestoreError, UsageError
from pgvault.pgtables import TableRef
from pgvault.pgtools import find_tool
from pgvault.producers.pgdump import check_db_name, compression, tool_version
from pgvault.restore.dbops import dbname_arg, first_error
from pgvault.restore.drill_logical import scratch_name
from pgvault.restore.logical import RestoreRequest, compare, resolve_tables
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.schemas.manifest import TablesFile

# `pg_restore --list --verbose` of tests/logical_data.py's schema (PostgreSQL 15), abridged
LISTING = """;
; Selected TOC Entries:
;
3439; 0 0 ENCODING - ENCODING
3440; 0 0 STDSTRINGS - STDSTRINGS
3441; 0 0 SEARCHPATH - SEARCHPATH
7; 2615 16386 SCHEMA - cms postgres
6; 2615 16385 SCHEMA - shop postgres
852; 1247 16388 TYPE shop order_status postgres
;\tdepends on: 6
225; 1259 16460 TABLE cms pages postgres
;\tdepends on: 7
227; 1259 16477 TABLE cms revisions postgres
;\tdepends on: 226 7
217; 1259 16398 TABLE shop customers postgres
;\tdepends on: 6
216; 1259 16397 SEQUENCE shop customers_id_seq postgres
;\tdepends on: 6 217
222; 1259 16435 TABLE shop order_items postgres
;\tdepends on: 6
221; 1259 16423 TABLE shop orders postgres
;\tdepends on: 852 852 6
3446; 0 0 COMMENT shop TABLE orders postgres
;\tdepends on: 221
223; 1259 16455 VIEW shop order_totals postgres
;\tdepends on: 221 221 6
220; 1259 16422 SEQUENCE shop orders_id_seq postgres
;\tdepends on: 6 221
3447; 0 0 SEQUENCE OWNED BY shop orders_id_seq postgres
;\tdepends on: 220
3239; 2604 16426 DEFAULT shop orders id postgres
;\tdepends on: 221 220 221
3429; 0 16423 TABLE DATA shop orders postgres
;\tdepends on: 221
3425; 0 16398 TABLE DATA shop customers postgres
;\tdepends on: 217
3452; 0 0 SEQUENCE SET shop orders_id_seq postgres
;\tdepends on: 220
3259; 2606 16429 CONSTRAINT shop orders orders_pkey postgres
;\tdepends on: 221
3251; 2606 16407 CONSTRAINT shop customers customers_pkey postgres
;\tdepends on: 217
3257; 1259 16451 INDEX shop orders_customer_id_idx postgres
;\tdepends on: 221
3278; 2606 16441 FK CONSTRAINT shop order_items order_items_order_id_fkey postgres
;\tdepends on: 222 221 3259
3277; 2606 16430 FK CONSTRAINT shop orders orders_customer_id_fkey postgres
;\tdepends on: 3251 217 221
3280; 2606 16485 FK CONSTRAINT cms revisions revisions_page_id_fkey postgres
;\tdepends on: 227 225
"""
ORDERS = TableRef("shop", "orders")


def ids(selection: pgtoc.Selection) -> list[int]:
    return [e.id for e in selection.entries]


def test_toc_parse_reads_multiword_descriptions_and_dependencies() -> None:
    entries = {e.id: e for e in pgtoc.parse(LISTING)}
    assert entries[3429].desc == "TABLE DATA" and entries[3429].names("shop", "orders")
    assert entries[3278].desc == "FK CONSTRAINT" and entries[3278].deps == [222, 221, 3259]
    assert entries[3447].desc == "SEQUENCE OWNED BY"
    assert not entries[221].names("shop", "order")
    found = pgtoc.data_tables(entries.values(), [ORDERS, TableRef("cms", "pages")])
    assert found == {ORDERS}


def test_toc_selection_into_an_existing_database() -> None:
    entries = pgtoc.parse(LISTING)
    asked: list[list[TableRef]] = []

    def exists(refs: list[TableRef]) -> set[TableRef]:
        asked.append(sorted(refs))
        return set(refs)

    sel = pgtoc.select_tables(entries, [ORDERS], new_database=False, relation_exists=exists)
    assert ids(sel) == [
        3439, 3440, 3441,  # session set-up
        221, 3446, 223, 220, 3447, 3239, 3429, 3452, 3259, 3257,  # the table and its parts
        3278, 3277,  # FK into it from order_items, its own FK to customers
    ]  # fmt: skip
    assert asked == [[TableRef("shop", "customers"), TableRef("shop", "order_items")]]
    assert sel.skipped == []
    # a related table missing from the target: the FK that needs it is left out
    sel = pgtoc.select_tables(
        entries, [ORDERS], new_database=False, relation_exists=lambda refs: set()
    )
    assert 3277 not in ids(sel) and 3278 not in ids(sel) and len(sel.skipped) == 2


def test_toc_selection_into_a_new_database_brings_prerequisites() -> None:
    entries = pgtoc.parse(LISTING)
    sel = pgtoc.select_tables(
        entries, [ORDERS], new_database=True, relation_exists=lambda refs: set()
    )
    chosen = ids(sel)
    assert 6 in chosen and 852 in chosen  # schema shop, enum type
    assert 7 not in chosen  # schema cms is not needed
    assert 3277 not in chosen and 3278 not in chosen
    assert any("orders_customer_id_fkey" in s for s in sel.skipped)
    assert pgtoc.list_file(sel).splitlines()[3].startswith("6; 2615 16385 SCHEMA")


def test_toc_selection_refuses_unknown_tables_and_lone_parents() -> None:
    entries = pgtoc.parse(LISTING)
    with pytest.raises(RestoreError, match="no definition"):
        pgtoc.select_tables(
            entries, [TableRef("x", "y")], new_database=True, relation_exists=lambda r: set()
        )
    child = "500; 1259 1 TABLE shop orders_2026 postgres\n;\tdepends on: 221\n"
    with pytest.raises(RestoreError, match=r"shop\.orders_2026"):
        pgtoc.select_tables(
            pgtoc.parse(LISTING + child),
            [ORDERS],
            new_database=False,
            relation_exists=set,
        )


def _event(name: str, finished: str, state: str = "verified") -> ArtifactEvent:
    db, _, backup_id = name.partition("/")
    sha = f"{abs(hash(name)) % 10**8:064d}"
    return ArtifactEvent(
        cluster="unit",
        kind="logical",
        state=state,  # type: ignore[arg-type]
        name=name,
        files=(FileInfo(name="manifest.json", size=10, sha256=sha),),
        meta={"db": db, "backup_id": backup_id, "started_at": finished, "finished_at": finished},
    )


def test_pick_logical_by_time_and_id(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "c.sqlite", "unit")
    apply_event(cat, _event("shop/20261101T000000Z", "2026-11-01T00:05:00.000000Z"))
    apply_event(cat, _event("shop/20261102T000000Z", "2026-11-02T00:05:00.000000Z"))
    apply_event(cat, _event("shop/20261103T000000Z", "2026-11-03T00:05:00.000000Z", "corrupt"))
    apply_event(cat, _event("blog/20261103T000000Z", "2026-11-03T00:05:00.000000Z"))
    assert [r.name for r in logical_backups(cat, "shop")] == [
        "shop/20261101T000000Z",
        "shop/20261102T000000Z",
    ]
    assert pick_logical(cat, "shop").backup_id == "20261102T000000Z"  # corrupt one skipped
    at = datetime(2026, 11, 2, 0, 5, tzinfo=UTC)
    assert pick_logical(cat, "shop", at=at).backup_id == "20261102T000000Z"
    at = datetime(2026, 11, 2, 0, 4, tzinfo=UTC)
    assert pick_logical(cat, "shop", at=at).backup_id == "20261101T000000Z"
    with pytest.raises(NotRestorable, match="oldest one, shop/20261101T000000Z"):
        pick_logical(cat, "shop", at=datetime(2026, 10, 1, tzinfo=UTC))
    with pytest.raises(NotRestorable, match="corrupt, not verified"):
        pick_logical(cat, "shop", backup_id="20261103T000000Z")
    with pytest.raises(NotRestorable, match="no logical backup shop/2020"):
        pick_logical(cat, "shop", backup_id="20200101T000000Z")
    with pytest.raises(NotRestorable, match="no verified logical backup of wiki"):
        pick_logical(cat, "wiki")
    cat.close()


def test_names_versions_and_compression() -> None:
    assert compression(15, 6) == ("6", {"method": "gzip", "level": 6})
    assert compression(16, 3) == ("zstd:3", {"method": "zstd", "level": 3})
    assert compression(17, 0) == ("0", {"method": "none", "level": 0})
    version, major = tool_version(find_tool("pg_dump"))
    assert major >= 15 and version.startswith(str(major))
    assert check_db_name("medusa_production") == "medusa_production"
    for bad in ("", "a\0b", "x" * 64, "ü" * 32):
        with pytest.raises(UsageError):
            check_db_name(bad)
    # issue 16 §5: any name PostgreSQL accepts is backed up, under an encoded path/key
    for odd, enc in (
        ("a/b", "a%2Fb"),
        (".hidden", "%2Ehidden"),
        ("..", "%2E."),
        ("Ext DB/ü..", "Ext%20DB%2F%C3%BC.."),
        ("100%", "100%25"),
        ("app.v2-x_y", "app.v2-x_y"),
    ):
        assert check_db_name(odd) == odd
        assert dbname.encode(odd) == enc and dbname.decode(enc) == odd
    with pytest.raises(ValueError):
        dbname.decode("a/b")
    when = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert scratch_name("medusa_production", when) == "medusa_production_verify_20261124"
    long = scratch_name("ö" * 40 + "-x" * 20, when)
    assert len(long.encode()) <= 63 and long.endswith("_verify_20261124")
    assert dbname_arg("a'b=c") == "dbname='a\\'b=c'"
    stderr = "pg_restore: error: could not execute query: boom\nwarning: errors ignored: 1\n"
    assert first_error(stderr) == "pg_restore: error: could not execute query: boom"


def test_restore_request_validation_and_table_names() -> None:
    settings = settings_from_dict({"cluster": "unit"})
    RestoreRequest("shop", "shop_copy").validate(settings)
    with pytest.raises(RestoreError, match="source database"):
        RestoreRequest("shop", "shop").validate(settings)
    RestoreRequest("shop", "shop", force_in_place=True).validate(settings)
    with pytest.raises(RestoreError, match="maintenance"):
        RestoreRequest("shop", "postgres").validate(settings)
    with pytest.raises(UsageError, match="mutually exclusive"):
        RestoreRequest("shop", "x", at=datetime.now(UTC), backup_id="1").validate(settings)
    tables = TablesFile.model_validate(
        {
            "tables": [
                {"schema": "shop", "name": "orders", "rows": 3},
                {"schema": "cms", "name": "pages", "rows": 2},
                {"schema": "public", "name": "pages", "rows": 1},
            ]
        }
    ).tables
    assert resolve_tables(tables, ("orders", "cms.pages", "shop.orders")) == [
        ORDERS,
        TableRef("cms", "pages"),
    ]
    with pytest.raises(RestoreError, match="ambiguous"):
        resolve_tables(tables, ("pages",))
    with pytest.raises(RestoreError, match="not in the dump"):
        resolve_tables(tables, ("shop.nope",))
    checks = compare({ORDERS: 3}, {ORDERS: 3, TableRef("x", "new"): 1}, None)
    assert [(c.name, c.ok) for c in checks] == [("orders", True), ("new", False)]


def test_plain_backup_logical_command_lines_skip_typer() -> None:
    """pgvault.__main__ runs these without typer; anything else is typer's to parse."""
    from pgvault.producers.logical_cmd import parse

    inv = parse(["-c", "/etc/p.toml", "-vv", "backup", "logical", "--db", "a", "--db=b", "--json"])
    assert inv is not None
    assert (str(inv.config), inv.verbose, inv.quiet, inv.dbs, inv.json_out) == (
        "/etc/p.toml",
        2,
        False,
        ["a", "b"],
        True,
    )
    plain = parse(["--config=x.toml", "-q", "backup", "logical"])
    assert plain is not None and plain.quiet and plain.dbs == [] and not plain.json_out
    for typer_s in (
        ["backup", "logical", "--help"],
        ["backup", "logical", "--db"],
        ["backup", "logical", "--db", "--json"],
        ["backup", "logical", "--db="],
        ["backup", "logical", "-v"],
        ["backup", "logical", "extra"],
        ["--version", "backup", "logical"],
        ["backup", "physical"],
        ["restore", "logical", "--db", "a"],
        ["-c"],
        [],
    ):
        assert parse(typer_s) is None, typer_s


def test_only_a_local_postgres_backend_is_reniced(tmp_path: Path) -> None:
    """The locality check behind counting the big tables beside pg_dump at nice 19: the
    process must work in the data directory and be PostgreSQL's."""
    from pgvault.producers.backend_priority import LOWEST, LowPriority, is_local_backend

    assert not is_local_backend(os.getpid(), str(tmp_path))  # our cwd is elsewhere
    assert not is_local_backend(os.getpid(), os.getcwd())  # not PostgreSQL
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    assert not is_local_backend(beyond, str(tmp_path))  # no such process
    assert not is_local_backend(os.getpid(), str(tmp_path / "missing"))
    fake = tmp_path / "data"
    fake.mkdir()
    (tmp_path / "link").symlink_to(fake)
    procs = {
        title: subprocess.Popen(["bash", "-c", f"exec -a '{title}' sleep 60"], cwd=fake)
        for title in ("postgres: u db 127.0.0.1(5) idle in transaction", "sleep")
    }
    try:
        deadline = time.monotonic() + 10
        pg_like, other = procs.values()
        while not is_local_backend(pg_like.pid, str(fake)) and time.monotonic() < deadline:
            time.sleep(0.02)  # until bash has exec'd
        assert is_local_backend(pg_like.pid, str(tmp_path / "link"))  # the same directory
        assert not is_local_backend(pg_like.pid, str(tmp_path))
        assert not is_local_backend(other.pid, str(fake))  # not PostgreSQL
        niced = LowPriority(pg_like.pid)
        was = os.getpriority(os.PRIO_PROCESS, pg_like.pid)
        assert niced.lower()
        assert os.getpriority(os.PRIO_PROCESS, pg_like.pid) == LOWEST
        niced.restore()
        if os.geteuid() == 0:  # giving a lower nice value back needs the privilege
            assert os.getpriority(os.PRIO_PROCESS, pg_like.pid) == was
        assert not niced.lower()  # over: never lowered again
        beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
        assert not LowPriority(beyond).lower()  # no such process: nothing to renice
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
