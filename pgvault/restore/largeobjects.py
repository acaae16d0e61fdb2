"""Large objects referenced by the rows of a single-table restore (issue 16 §4).

A table's `oid` and `lo` (a domain over oid) columns point at large objects, which a
dump keeps apart from any table (`BLOB`/`BLOBS` entries). After `--table` restored the
rows, the referenced large objects missing from the target are copied from the dump:
its large objects (with owner, ACL and comments) are restored into a scratch database
`pgvault_lo_<hex>`, the missing ones copied into the target in one transaction
(content, owner, grants, comment), and the scratch database dropped. What is still
missing afterwards (the dump did not hold it either) is counted and fails the report.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from pgvault import pg
from pgvault.config import Settings
from pgvault.pg import sql
from pgvault.pgtables import TableRef
from pgvault.pgtoc import SPECIAL, TocEntry
from pgvault.pgtools import run_tool
from pgvault.restore import dbops
from pgvault.restore.logical_report import LargeObjectCheck

log = logging.getLogger(__name__)

LO_DESCS = frozenset({"BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECT"})
LO_SUBSIDIARY = frozenset({"ACL", "COMMENT", "SECURITY LABEL"})
CHUNK = 1 << 20

_COLUMNS_SQL = """
SELECT a.attname AS column
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND (a.atttypid = 'oid'::regtype OR (t.typtype = 'd' AND t.typbasetype = 'oid'::regtype))
ORDER BY a.attnum
"""


def referenced(conn: pg.Connection, tables: list[TableRef]) -> set[int]:
    """Distinct non-zero values of the oid/lo columns of these tables (ONLY each table:
    partitions are listed themselves)."""
    oids: set[int] = set()
    for t in tables:
        for col in pg.fetch_all(conn, _COLUMNS_SQL, (t.schema, t.name)):
            query = sql.SQL(
                "SELECT DISTINCT {c}::oid::bigint AS v FROM ONLY {s}.{t} "
                "WHERE {c} IS NOT NULL AND {c}::oid <> 0"
            ).format(
                c=sql.Identifier(col["column"]),
                s=sql.Identifier(t.schema),
                t=sql.Identifier(t.name),
            )
            oids |= {int(r["v"]) for r in pg.fetch_all(conn, query)}
    return oids


def existing(conn: pg.Connection, oids: set[int]) -> set[int]:
    rows = pg.fetch_all(
        conn,
        "SELECT oid::bigint AS v FROM pg_largeobject_metadata WHERE oid = ANY(%s::oid[])",
        (sorted(oids),),
    )
    return {int(r["v"]) for r in rows}


def _lo_entries(entries: list[TocEntry]) -> list[TocEntry]:
    ids = {e.id for e in entries if e.desc in LO_DESCS}
    ids |= {e.id for e in entries if e.desc in LO_SUBSIDIARY and set(e.deps) & ids}
    ids |= {e.id for e in entries if e.desc in SPECIAL}
    return [e for e in entries if e.id in ids]


def _copy(src: pg.Connection, dst: pg.Connection, oid: int, roles: set[str]) -> None:
    meta = pg.fetch_one(
        src,
        "SELECT pg_get_userbyid(lomowner) AS owner, obj_description(oid, 'pg_largeobject') "
        "AS comment FROM pg_largeobject_metadata WHERE oid = %s::oid",
        (oid,),
    )
    assert meta is not None
    pg.fetch_all(dst, "SELECT lo_create(%s::oid)", (oid,))
    offset = 0
    while True:
        chunk = pg.fetch_value(src, "SELECT lo_get(%s::oid, %s, %s)", (oid, offset, CHUNK))
        if not chunk:
            break
        pg.fetch_all(dst, "SELECT lo_put(%s::oid, %s, %s)", (oid, offset, bytes(chunk)))
        offset += len(chunk)
    lo = sql.SQL("LARGE OBJECT {}").format(sql.Literal(oid))
    if meta["owner"] in roles:
        pg.fetch_all(dst, sql.SQL("ALTER {} OWNER TO {}").format(lo, sql.Identifier(meta["owner"])))
    grants = pg.fetch_all(
        src,
        "SELECT coalesce(r.rolname, 'PUBLIC') AS grantee, a.privilege_type AS privilege, "
        "a.is_grantable AS grantable FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE m.oid = %s::oid",
        (oid,),
    )
    for g in grants:
        if g["grantee"] != "PUBLIC" and g["grantee"] not in roles:
            continue
        who = sql.SQL("PUBLIC") if g["grantee"] == "PUBLIC" else sql.Identifier(g["grantee"])
        option = sql.SQL(" WITH GRANT OPTION" if g["grantable"] else "")
        pg.fetch_all(
            dst,
            sql.SQL("GRANT {} ON {} TO {}{}").format(sql.SQL(g["privilege"]), lo, who, option),
        )
    if meta["comment"] is not None:
        pg.fetch_all(dst, sql.SQL("COMMENT ON {} IS {}").format(lo, sql.Literal(meta["comment"])))


def restore_referenced(
    settings: Settings,
    dump: Path,
    *,
    pg_restore: str,
    entries: list[TocEntry],
    target: str,
    tables: list[TableRef],
) -> LargeObjectCheck:
    """Copy the large objects the restored rows reference and the target lacks."""
    with pg.connect(settings.postgres, target) as conn:
        wanted = referenced(conn, tables)
        present = existing(conn, wanted) if wanted else set()
    check = LargeObjectCheck(referenced=len(wanted), present=len(present))
    missing = wanted - present
    lo_entries = _lo_entries(entries)
    if not missing or not any(e.desc in LO_DESCS for e in lo_entries):
        check.missing = len(missing)
        return check
    scratch = f"pgvault_lo_{uuid.uuid4().hex[:10]}"
    with dbops.maintenance(settings) as conn:
        dbops.create_database(conn, scratch, None)
    try:
        list_path = dump.with_name("largeobjects.list")
        list_path.write_text("".join(e.line + "\n" for e in lo_entries))
        proc = run_tool(
            [
                pg_restore,
                "--no-password",
                f"--use-list={list_path}",
                f"--dbname={dbops.dbname_arg(scratch)}",
                str(dump),
            ],
            env=dbops.tool_env(settings),
            check=False,
        )
        if proc.returncode != 0:  # e.g. an owner role missing here: copy what came back
            log.warning("large objects of %s: %s", dump.name, dbops.first_error(proc.stderr))
        with (
            pg.connect(settings.postgres, scratch) as src,
            pg.connect(settings.postgres, target, autocommit=False) as dst,
        ):
            roles = {r["rolname"] for r in pg.fetch_all(dst, "SELECT rolname FROM pg_roles")}
            available = existing(src, missing)
            for oid in sorted(available):
                _copy(src, dst, oid, roles)
            dst.commit()
        check.restored = len(available)
    finally:
        dbops.drop_quietly(settings, scratch)
    with pg.connect(settings.postgres, target) as conn:
        check.missing = len(wanted - existing(conn, wanted))
    return check


__all__ = ["existing", "referenced", "restore_referenced"]
