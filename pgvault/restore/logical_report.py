"""What `restore logical` reports: row counts per table (and through each partitioned
parent), database properties that differ, large objects the restored rows reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pgvault.errors import RestoreError
from pgvault.pgtables import TableRef
from pgvault.pgtoc import partition_tree
from pgvault.schemas.manifest import LogicalManifest, TableCount


@dataclass
class TableCheck:
    schema: str
    name: str
    expected: int | None  # rows in the manifest (None: not in the dump's snapshot)
    restored: int | None  # rows after the restore (None: table missing)
    # partitioned tables: rows of the whole tree per the manifest, and counted through
    # the parent after the restore (a detached partition makes them differ)
    tree_expected: int | None = None
    tree_restored: int | None = None

    @property
    def ok(self) -> bool:
        return self.expected == self.restored and self.tree_expected == self.tree_restored


@dataclass
class LargeObjectCheck:
    """Large objects referenced by oid/lo columns of the restored tables."""

    referenced: int = 0  # distinct non-zero values
    present: int = 0  # already in the target before the restore
    restored: int = 0  # copied from the dump
    missing: int = 0  # still dangling afterwards

    @property
    def ok(self) -> bool:
        return self.missing == 0


@dataclass
class RestoreReport:
    db: str
    target_db: str
    backup: str  # artifact name "<encoded db>/<backup_id>"
    backup_id: str
    dump_finished_at: str
    mode: str  # "database" | "tables"
    fetched_from: str = ""  # "spool" | "store"
    jobs: int = 1
    replaced: bool = False  # an existing target database was replaced
    tables: list[TableCheck] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # whole database: properties (locale, ACL, settings...) that differ from the source
    database_differences: list[str] = field(default_factory=list)
    large_objects: LargeObjectCheck | None = None  # tables mode
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def mismatches(self) -> list[TableCheck]:
        return [t for t in self.tables if not t.ok]

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.mismatches
            and not self.database_differences
            and (self.large_objects is None or self.large_objects.ok)
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [dict(asdict(t), ok=t.ok) for t in self.tables]
        data["mismatches"] = len(self.mismatches)
        data["ok"] = self.ok
        return data


def table_counts(tables: Sequence[TableCount]) -> dict[TableRef, int]:
    return {TableRef(t.schema_name, t.name): t.rows for t in tables}


def manifest_counts(manifest: LogicalManifest) -> dict[TableRef, int]:
    """Rows per table as the dump's manifest (or its tables file, loaded) records them."""
    return table_counts(manifest.tables or [])


def compare(
    expected: dict[TableRef, int], restored: dict[TableRef, int], only: list[TableRef] | None
) -> list[TableCheck]:
    names = only if only is not None else sorted(set(expected) | set(restored))
    return [TableCheck(t.schema, t.name, expected.get(t), restored.get(t)) for t in names]


def add_tree_counts(
    checks: list[TableCheck],
    tree: dict[TableRef, list[TableRef]],
    expected: dict[TableRef, int],
    count_through: Callable[[TableRef], int | None],
) -> None:
    """For each partitioned table among `checks`: the manifest's rows of its whole tree
    and the rows counted through the parent (`SELECT count(*) FROM parent`)."""
    for check in checks:
        ref = TableRef(check.schema, check.name)
        if ref not in tree:
            continue
        members = [ref, *partition_tree(tree, ref)]
        check.tree_expected = sum(expected.get(t, 0) for t in members)
        check.tree_restored = count_through(ref)


def resolve_tables(tables: Sequence[TableCount], requested: tuple[str, ...]) -> list[TableRef]:
    """'schema.name' or a bare 'name' (unique across schemas) -> tables of the dump."""
    known = sorted(table_counts(tables))
    out: list[TableRef] = []
    for text in requested:
        schema, dot, name = text.partition(".")
        exact = [t for t in known if dot and t.schema == schema and t.name == name]
        bare = [t for t in known if t.name == text]
        found = exact or bare
        if not found:
            sample = ", ".join(t.qualified for t in known[:8])
            raise RestoreError(f"table {text} is not in the dump (it has: {sample} ...)")
        if len(found) > 1:
            names = ", ".join(t.qualified for t in found)
            raise RestoreError(f"table {text} is ambiguous ({names}); qualify it with a schema")
        if found[0] not in out:
            out.append(found[0])
    return out


__all__ = [
    "LargeObjectCheck",
    "RestoreReport",
    "TableCheck",
    "add_tree_counts",
    "compare",
    "manifest_counts",
    "resolve_tables",
]
