"""Issue 16 §2-§5 on the rich-schema corpus (tests/corpus.py), with real PostgreSQL 15,
RabbitMQ and the local store: an odd database name is backed up next to a failing one,
restored whole (properties, large objects with their ACL, every table exact by a
normalised pg_dump and row digests), per partitioned table (tree attached, counted
through the parent) and per table with large-object references, and drilled."""

from __future__ import annotations

import json

import pytest

from pgvault import dbname
from tests import corpus
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.logical_data import databases
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.slow

DB = corpus.ODD_DB
ENC = dbname.encode(DB)


def corpus_env(make_env: EnvFactory) -> tuple[PgvaultEnv, PgCluster]:
    env = make_env("local")
    env.cli("init")
    pg = PgCluster(env.base)
    pg.initdb(None)
    pg.start()
    env.pg = pg
    corpus.build(pg, DB)
    env.data["postgres"] = {
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "databases": [DB],
    }
    env.write_config()
    return env, pg


def props(pg: PgCluster, db: str) -> tuple[object, ...]:
    return tuple(
        pg.sql(
            "SELECT datlocprovider, daticulocale, datcollate, datctype, datconnlimit, "
            "shobj_description(oid, 'pg_database'), "
            "(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(datacl) a), "
            "(SELECT array_agg(coalesce(r.rolname, '*') || ':' || "
            "  (SELECT string_agg(x, ';' ORDER BY x) FROM unnest(s.setconfig) x) "
            "  ORDER BY r.rolname NULLS FIRST) FROM pg_db_role_setting s "
            "  LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid) "
            "FROM pg_database d WHERE datname = %s",
            (db,),
        )[0]
    )


def test_corpus_whole_and_per_table(make_env: EnvFactory) -> None:
    env, pg = corpus_env(make_env)
    # §5: an odd name is backed up; a failing database next to it does not stop it
    proc = env.cli("backup", "logical", "--db", "no such db", "--db", DB, "--json", check=False)
    assert proc.returncode == 1
    out = {b["db"]: b for b in json.loads(proc.stdout)["backups"]}
    assert not out["no such db"]["ok"] and out[DB]["ok"], out
    bid = out[DB]["backup_id"]
    bdir = env.spool / "logical" / ENC / bid
    manifest = json.loads((bdir / "manifest.json").read_text())
    assert manifest["db"] == DB and (bdir / f"{ENC}.dump").is_file()
    dp = manifest["database_properties"]
    assert dp["locale_provider"] == "icu" and dp["icu_locale"] == "de-DE"
    assert dp["connection_limit"] == 17 and dp["comment"].startswith("corpus:")
    assert {"role": "corpus_app", "setting": "statement_timeout=42s"} in dp["settings"]
    assert {"grantee": "corpus_reader", "privilege": "CONNECT", "grantable": False} in dp["acl"]
    env.drain(rounds=2)
    cat = env.catalog()
    try:
        row = cat.query("SELECT * FROM artifacts WHERE kind = 'logical'")[0]
    finally:
        cat.close()
    assert row["name"] == f"{ENC}/{bid}" and row["db"] == DB and row["state"] == "verified"
    for f in json.loads(row["files"]):
        assert f["key"].startswith(f"pg/{env.cluster}/logical/{ENC}/{bid}/")

    source_dump = corpus.normalised_dump(pg, DB)
    source_rows = corpus.row_digests(pg, DB)
    source_los = corpus.large_objects(pg, DB)
    assert len(source_los) == 6

    # §3/§4: whole database, reproduced with its properties and every large object + ACL
    copy = "Kopie ü"
    rep = env.cli_json("restore", "logical", "--db", DB, "--target-db", copy, "--backup", bid)
    assert rep["ok"] and rep["database_differences"] == [], rep
    assert props(pg, copy)[:6] == props(pg, DB)[:6]
    assert props(pg, copy)[6:] == props(pg, DB)[6:]
    assert corpus.normalised_dump(pg, copy) == source_dump
    assert corpus.row_digests(pg, copy) == source_rows
    assert corpus.large_objects(pg, copy) == source_los
    # the ICU sort order came back
    order = "SELECT string_agg(c, '' ORDER BY c) FROM unnest(ARRAY['b','A','a','B']) c"
    assert pg.one(order, dbname=copy) == pg.one(order, dbname=DB) == "aAbB"
    m = {t["name"]: t for t in rep["tables"]}
    assert m["m"]["tree_expected"] == m["m"]["tree_restored"] == 260

    # §2: a partitioned parent brings its whole tree, attached, counted through the parent
    rep = env.cli_json(
        "restore", "logical", "--db", DB, "--target-db", "parts", "--table", corpus.PARENT
    )
    assert rep["ok"], rep
    names = sorted(f"{t['schema']}.{t['name']}" for t in rep["tables"])
    assert names == sorted([corpus.PARENT, *corpus.PARTITIONS])
    checks = {t["name"]: t for t in rep["tables"]}
    assert checks["m"]["tree_expected"] == checks["m"]["tree_restored"] == 260
    assert checks["m1"]["tree_expected"] == checks["m1"]["tree_restored"] == 100
    assert pg.one("SELECT count(*) FROM part.m", dbname="parts") == 260
    assert pg.sql(
        "SELECT relname FROM pg_class WHERE relnamespace = 'part'::regnamespace "
        "AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY 1",
        dbname="parts",
    ) == [("m",)]
    for t in ("part.m", *corpus.PARTITIONS):
        assert corpus.row_digests(pg, "parts")[t] == source_rows[t]

    # ... in place too, after damage (the old code lost the ATTACH PARTITION entries)
    pg.sql("DELETE FROM part.m WHERE k %% 2 = 0", dbname=DB)
    rep = env.cli_json(
        "restore",
        "logical",
        "--db",
        DB,
        "--target-db",
        DB,
        "--force-in-place",
        "--table",
        corpus.PARENT,
        "--table",
        "part.m1",
        "--table",
        "part.m2",
    )
    assert rep["ok"], rep
    assert pg.one("SELECT count(*) FROM part.m", dbname=DB) == 260
    assert pg.one(
        "SELECT bool_and(relispartition) FROM pg_class WHERE relname = ANY(%s)",
        (["m1", "m1a", "m1d", "m2", "md"],),
        dbname=DB,
    )

    # a partition alone into a new database would come back detached: refused
    proc = env.cli(
        "restore", "logical", "--db", DB, "--target-db", "lonely", "--table", "part.m2", check=False
    )
    assert proc.returncode == 1 and "detached" in proc.stderr and "part.m" in proc.stderr
    assert "lonely" not in databases(pg)

    # §4: a table whose rows reference large objects brings them (content, ACL, comment)
    rep = env.cli_json(
        "restore", "logical", "--db", DB, "--target-db", "kitchen", "--table", corpus.LO_TABLE
    )
    assert rep["ok"], rep
    assert rep["large_objects"] == {"referenced": 6, "present": 0, "restored": 6, "missing": 0}
    assert corpus.large_objects(pg, "kitchen") == source_los
    assert corpus.row_digests(pg, "kitchen")["contribx.kitchen"] == source_rows["contribx.kitchen"]
    # a reference the dump cannot satisfy is never ok
    pg.sql("SELECT lo_unlink(min(doc::oid)) FROM contribx.kitchen", dbname="kitchen")
    pg.sql("UPDATE contribx.kitchen SET doc = 999999 WHERE id = 1", dbname=DB)
    env.cli("backup", "logical", "--db", DB)
    env.drain(rounds=2)
    proc = env.cli(
        "restore",
        "logical",
        "--db",
        DB,
        "--target-db",
        "kitchen",
        "--clean",
        "--table",
        corpus.LO_TABLE,
        "--json",
        check=False,
    )
    assert proc.returncode == 1
    rep = json.loads(proc.stdout)
    assert rep["large_objects"]["missing"] == 1 and not rep["ok"]

    # the odd table name restores on its own
    rep = env.cli_json(
        "restore",
        "logical",
        "--db",
        DB,
        "--target-db",
        "odd",
        "--table",
        "Schema ö.Tabelle mit Ümlaut",
    )
    assert rep["ok"] and rep["tables"][0]["restored"] == 2

    # §3: the drill compares the database's properties too
    out = env.cli_json("drill", "logical", "--db", DB)
    assert out["drills"][0]["result"] == "ok", out
