"""pg_dump of one database of the scratch cluster, with the rows it holds at T.

The dump is what `restore logical --table` / a whole-database `restore logical` restore
(restore/logical.py `load_tables`, `load_database`), so it comes with a LogicalManifest
built from the scratch cluster itself: exact row counts, the database's properties.
For a table restore, only the selected tables (with their partition trees) carry
data (`--exclude-table-data` for every other table): the definitions of the rest stay
in the dump so foreign keys pointing at the selected tables, views and large objects
are restored the way `restore logical --table` restores them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgvault import dbprops, pg, pgtables
from pgvault.config import PostgresSettings
from pgvault.pgtables import TableRef
from pgvault.pgtools import find_tool, libpq_env, run_tool
from pgvault.producers.pgdump import compression, tool_version
from pgvault.schemas.manifest import (
    DatabaseInfo,
    DumpCompression,
    LogicalManifest,
    ManifestFile,
    TableCount,
)
from pgvault.storage.codec import sha256_file
from pgvault.timeutil import iso

TREE_SQL = (
    "SELECT n.nspname AS schema, c.relname AS name FROM pg_partition_tree(%s::regclass) t "
    "JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p')"
)


@dataclass
class ScratchDump:
    path: Path
    manifest: LogicalManifest
    tables: list[TableRef]  # the selected tables with their partitions (empty: database)
    counts: dict[TableRef, int]  # exact rows at T (ONLY), per table dumped with data


def quoted(t: TableRef) -> str:
    """ "schema"."name": a regclass literal, and a pg_dump pattern matching only it."""
    return '"{}"."{}"'.format(t.schema.replace('"', '""'), t.name.replace('"', '""'))


def with_partitions(conn: pg.Connection, tables: list[TableRef]) -> list[TableRef]:
    out: list[TableRef] = []
    for t in tables:
        for row in pg.fetch_all(conn, TREE_SQL, (quoted(t),)):
            ref = TableRef(str(row["schema"]), str(row["name"]))
            if ref not in out:
                out.append(ref)
        if t not in out:
            out.append(t)
    return out


def dump_scratch(
    server: PostgresSettings,
    bin_dir: str,
    major: int | None,
    db: str,
    work: Path,
    *,
    tables: list[TableRef] | None,
) -> ScratchDump:
    """Dump `db` (only `tables` with data when given) from the scratch cluster."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    pg_dump = find_tool("pg_dump", bin_dir, major)
    version, dump_major = tool_version(pg_dump)
    compress, comp_meta = compression(dump_major, 1)
    path = work / "scratch.dump"
    with pg.connect(server, db) as conn:
        server_num = pg.server_version_num(conn)
        server_version = str(pg.fetch_value(conn, "SHOW server_version"))
        every = pgtables.list_tables(conn)
        wanted = with_partitions(conn, tables) if tables is not None else every
        counts = pgtables.count_all(conn, wanted)
        props = dbprops.database_properties(conn, db)
        dbinfo = pg.fetch_one(
            conn,
            "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, "
            "datctype AS ctype, pg_get_userbyid(datdba) AS owner "
            "FROM pg_database WHERE datname = current_database()",
        )
    args = [pg_dump, "--format=custom", f"--compress={compress}", f"--file={path}", "--no-password"]
    if tables is not None:
        args += [f"--exclude-table-data={quoted(t)}" for t in every if t not in wanted]
    run_tool(args, env=libpq_env(server.host, server.port, server.user, db), what="pg_dump")
    finished = datetime.now(UTC)
    digest = sha256_file(path)
    manifest = LogicalManifest(
        cluster="scratch",
        db=db,
        backup_id=f"scratch-{started.strftime('%Y%m%dT%H%M%SZ')}",
        started_at=iso(started),
        snapshot_at=iso(started),
        finished_at=iso(finished),
        duration_s=round(time.monotonic() - t0, 3),
        source=f"{server.host}:{server.port}",
        server_version=server_version,
        server_version_num=server_num,
        pg_major=server_num // 10000,
        pg_dump_version=version,
        snapshot="",
        compression=DumpCompression.model_validate(comp_meta),
        database=DatabaseInfo.model_validate(dbinfo or {}),
        database_properties=dict(props),
        dump_size=digest.size,
        dump_sha256=digest.sha256,
        table_count=len(counts),
        row_count=sum(counts.values()),
        files=[ManifestFile(name=path.name, size=digest.size, sha256=digest.sha256)],
        tables=[
            TableCount(schema_name=t.schema, name=t.name, rows=n) for t, n in sorted(counts.items())
        ],
    )
    return ScratchDump(path, manifest, wanted if tables is not None else [], counts)
