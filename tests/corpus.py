"""A rich-schema corpus for restore tests (issue 16): what real databases hold and a toy
schema does not. `build(pg, name)` creates, in a throw-away cluster, a database with:

- ICU locale provider (de-DE), a comment, CONNECTION LIMIT, ALTER DATABASE ... SET,
  per-role-in-database settings and grants on the database (roles corpus_app/_reader);
- multi-level range/list partitioning with default partitions and sub-partitions,
  inheritance, an unlogged table, domains, ranges, arrays, enums, generated columns,
  rules, an event trigger, ICU and nondeterministic collations;
- contrib extensions of Debian's PostgreSQL 15 (hstore, pg_trgm, citext, lo), large
  objects (one with a grant and a comment) referenced from a table's `lo` column;
- schema and table names with spaces and non-ASCII letters.

`normalised_dump` and `row_digests` compare a source with its copy.
"""

from __future__ import annotations

import re
import subprocess

from tests.pgcluster import PG_BIN, PgCluster

ODD_DB = "Ext DB/ü.."
PARENT = "part.m"  # range partitioned: m1 (list, sub-partitioned), m2, default md
PARTITIONS = ("part.m1", "part.m1a", "part.m1d", "part.m2", "part.md")
LO_TABLE = "contribx.kitchen"
ODD_TABLE = 'Schema ö."Tabelle mit Ümlaut"'

DATABASE_SQL = """
CREATE DATABASE {db} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu
  ICU_LOCALE 'de-DE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 17;
COMMENT ON DATABASE {db} IS 'corpus: comment on the database';
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO corpus_reader;
GRANT CREATE ON DATABASE {db} TO corpus_app WITH GRANT OPTION;
ALTER DATABASE {db} SET work_mem TO '3MB';
ALTER DATABASE {db} SET search_path TO 'part', '$user', 'public';
ALTER DATABASE {db} SET "corpus.flag" TO 'on';
ALTER ROLE corpus_app IN DATABASE {db} SET statement_timeout TO '42s';
"""

SCHEMA_SQL = """
CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm; CREATE EXTENSION citext;
CREATE EXTENSION lo;
CREATE SCHEMA part; CREATE SCHEMA contribx; CREATE SCHEMA "Schema ö";
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE COLLATION de_icu (provider = icu, locale = 'de-DE');
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);

CREATE TABLE part.m (k int NOT NULL, v text NOT NULL, note text) PARTITION BY RANGE (k);
CREATE TABLE part.m1 PARTITION OF part.m FOR VALUES FROM (0) TO (100) PARTITION BY LIST (v);
CREATE TABLE part.m1a PARTITION OF part.m1 FOR VALUES IN ('a');
CREATE TABLE part.m1d PARTITION OF part.m1 DEFAULT;
CREATE TABLE part.m2 PARTITION OF part.m FOR VALUES FROM (100) TO (200);
CREATE TABLE part.md PARTITION OF part.m DEFAULT;
CREATE INDEX ON part.m (k);
INSERT INTO part.m SELECT g, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END, 'n' || g
  FROM generate_series(0, 259) g;

CREATE TABLE part.animal (id serial PRIMARY KEY, name text COLLATE ci);
CREATE TABLE part.dog (bark int) INHERITS (part.animal);
INSERT INTO part.animal (name) VALUES ('Cat'), ('cAT');
INSERT INTO part.dog (name, bark) VALUES ('Rex', 3);

CREATE UNLOGGED TABLE part.scratch (id int, payload text);
INSERT INTO part.scratch SELECT g, 'u' || g FROM generate_series(1, 7) g;

CREATE TABLE contribx.kitchen (
  id int PRIMARY KEY, doc lo, tags hstore, email citext, words text[], m mood,
  qty posint, span floatrange, name text COLLATE de_icu,
  total numeric GENERATED ALWAYS AS (qty * 2) STORED);
CREATE INDEX kitchen_trgm ON contribx.kitchen USING gin (name gin_trgm_ops);
INSERT INTO contribx.kitchen (id, doc, tags, email, words, m, qty, span, name)
SELECT g, lo_from_bytea(0, convert_to(repeat('blob' || g, 1000), 'UTF8')),
  hstore('k', g::text), 'User' || g || '@X.org', ARRAY['a', 'ü', g::text],
  (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, g, floatrange(g, g + 0.5),
  (ARRAY['Äpfel', 'apfel', 'Zebra', 'öl'])[1 + g % 4]
FROM generate_series(1, 6) g;
CREATE TABLE contribx.kitchen_log (id serial, what text);
CREATE RULE kitchen_del AS ON DELETE TO contribx.kitchen
  DO ALSO INSERT INTO contribx.kitchen_log (what) VALUES ('deleted ' || OLD.id);

CREATE TABLE "Schema ö"."Tabelle mit Ümlaut" ("Spalte ß" text, n int);
INSERT INTO "Schema ö"."Tabelle mit Ümlaut" VALUES ('x y', 1), ('ÄÖÜ', 2);

CREATE FUNCTION contribx.on_ddl() RETURNS event_trigger LANGUAGE plpgsql
  AS $$ BEGIN RAISE NOTICE 'ddl %', tg_tag; END $$;
CREATE EVENT TRIGGER corpus_ddl ON ddl_command_end EXECUTE FUNCTION contribx.on_ddl();
"""

LO_SQL = """
GRANT SELECT ON LARGE OBJECT {oid} TO corpus_reader;
COMMENT ON LARGE OBJECT {oid} IS 'corpus large object';
"""


def build(pg: PgCluster, name: str = ODD_DB) -> None:
    for role in ("corpus_app", "corpus_reader"):
        if not pg.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
            pg.sql(f"CREATE ROLE {role}")
    with pg.connect() as conn:
        conn.autocommit = True
        quoted = '"' + name.replace('"', '""') + '"'
        for stmt in DATABASE_SQL.format(db=quoted).split(";\n"):
            if stmt.strip():
                conn.execute(stmt)  # type: ignore[call-overload]
    with pg.connect(name) as conn:
        conn.execute(SCHEMA_SQL)  # type: ignore[call-overload]
        first = conn.execute("SELECT min(doc::oid) FROM contribx.kitchen").fetchone()
        assert first is not None
        conn.execute(LO_SQL.format(oid=int(first[0])))  # type: ignore[call-overload]
        conn.commit()


_NOISE = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config|\\connect|\\restrict|\\unrestrict)")


def normalised_dump(pg: PgCluster, db: str) -> list[str]:
    """pg_dump's plain output (large objects included), comments, SET lines and blank
    lines removed and the lines sorted: equal for a faithful copy."""
    proc = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--no-password", "-d", pg.dsn(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(ln for ln in proc.stdout.splitlines() if ln.strip() and not _NOISE.match(ln))


def row_digests(pg: PgCluster, db: str) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the sorted rows) of every user table, its own rows only."""
    tables = pg.sql(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%'",
        dbname=db,
    )
    out = {}
    for (t,) in tables:
        out[t] = tuple(
            pg.sql(
                f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
                f"FROM ONLY {t} x",
                dbname=db,
            )[0]
        )
    return out


def large_objects(pg: PgCluster, db: str) -> dict[int, tuple[str, str | None, str]]:
    """oid -> (md5 of the content, ACL, owner) of every large object."""
    rows = pg.sql(
        "SELECT oid::bigint, md5(lo_get(oid)), lomacl::text, pg_get_userbyid(lomowner) "
        "FROM pg_largeobject_metadata",
        dbname=db,
    )
    return {int(r[0]): (r[1], r[2], r[3]) for r in rows}
