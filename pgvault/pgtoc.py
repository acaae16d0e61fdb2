"""The table of contents of a custom-format dump (`pg_restore --list --verbose`), and
choosing the entries that restore a few tables ("单表恢复") into a database.

A TOC line is `ID; TABLEOID OID DESC SCHEMA TAG OWNER`, where DESC may be several words
(`TABLE DATA`, `FK CONSTRAINT`) and is followed, in verbose mode, by
`;\tdepends on: ID ID ...`. Selecting a table means its definition, data and everything
hanging off it: defaults, constraints, indexes, triggers, policies, rules, comments,
grants, its serial/identity sequences and their values, the foreign keys of *other*
tables that point at it (dropped and re-added, so they are validated against the
restored rows) and the views built on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pgvault.errors import RestoreError
from pgvault.pgtables import TableRef

_LINE_RE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPS_PREFIX = ";\tdepends on:"

# Multi-word descriptions first, so "TABLE DATA" is not read as "TABLE".
KNOWN_DESCS = sorted(
    (
        "ACCESS METHOD",
        "ACL",
        "AGGREGATE",
        "BLOB",
        "BLOBS",
        "CAST",
        "CHECK CONSTRAINT",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "DEFAULT ACL",
        "DOMAIN",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "FOREIGN TABLE",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "LARGE OBJECT",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "POLICY",
        "PROCEDURAL LANGUAGE",
        "PROCEDURE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEARCHPATH",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SERVER",
        "SHELL TYPE",
        "STATISTICS",
        "STDSTRINGS",
        "SUBSCRIPTION",
        "TABLE",
        "TABLE ATTACH",
        "TABLE DATA",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TRANSFORM",
        "TRIGGER",
        "TYPE",
        "USER MAPPING",
        "VIEW",
    ),
    key=len,
    reverse=True,
)
SPECIAL = ("ENCODING", "STDSTRINGS", "SEARCHPATH")  # session set-up, always restored
RELATIONS = ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE")
# What belongs to a selected table (found through "depends on" a selected entry).
SUBSIDIARY = frozenset(
    {
        "ACL",
        "COMMENT",
        "CONSTRAINT",
        "DEFAULT",
        "FK CONSTRAINT",
        "INDEX",
        "INDEX ATTACH",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "POLICY",
        "ROW SECURITY",
        "RULE",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "STATISTICS",
        "TABLE ATTACH",
        "TABLE DATA",
        "TRIGGER",
        "VIEW",
    }
)
# What a selected table needs to exist first (restored only into a new database).
PREREQUISITES = frozenset(
    {
        "ACCESS METHOD",
        "AGGREGATE",
        "CAST",
        "COLLATION",
        "CONVERSION",
        "DOMAIN",
        "EXTENSION",
        "FUNCTION",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "PROCEDURAL LANGUAGE",
        "PROCEDURE",
        "SCHEMA",
        "SEQUENCE",
        "SEQUENCE SET",
        "SHELL TYPE",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TYPE",
    }
)


@dataclass
class TocEntry:
    id: int
    desc: str
    rest: str  # "SCHEMA TAG OWNER" as printed
    line: str
    deps: list[int] = field(default_factory=list)

    def names(self, schema: str, tag: str) -> bool:
        """Does this entry's SCHEMA TAG equal these (OWNER follows, without spaces)?"""
        head = f"{schema} {tag}"
        if self.rest.rstrip() == head:
            return True
        return self.rest.startswith(head + " ") and " " not in self.rest[len(head) + 1 :].strip()

    def relation(self, candidates: Iterable[TableRef]) -> TableRef | None:
        return next((t for t in candidates if self.names(t.schema, t.name)), None)


def label(e: TocEntry) -> str:
    """'FK CONSTRAINT shop order_items order_items_order_id_fkey' (owner left out)."""
    return f"{e.desc} {e.rest.rstrip().rsplit(' ', 1)[0]}"


def parse(text: str) -> list[TocEntry]:
    entries: list[TocEntry] = []
    for raw in text.splitlines():
        if raw.startswith(_DEPS_PREFIX) and entries:
            entries[-1].deps.extend(int(x) for x in raw[len(_DEPS_PREFIX) :].split())
            continue
        m = _LINE_RE.match(raw)
        if not m:
            continue
        rest = m.group(4)
        desc = next((d for d in KNOWN_DESCS if rest.startswith(d + " ")), rest.split(" ")[0])
        entries.append(TocEntry(int(m.group(1)), desc, rest[len(desc) + 1 :], raw))
    return entries


def data_tables(entries: Iterable[TocEntry], tables: Iterable[TableRef]) -> set[TableRef]:
    """Which of these tables have a TABLE DATA entry."""
    wanted = list(tables)
    found = set()
    for e in entries:
        if e.desc == "TABLE DATA" and (t := e.relation(wanted)) is not None:
            found.add(t)
    return found


def _ref(e: TocEntry) -> TableRef:
    schema, _, tag = e.rest.partition(" ")
    return TableRef(schema, tag.rsplit(" ", 1)[0] if " " in tag else tag)


def partitions(entries: list[TocEntry]) -> dict[TableRef, list[TableRef]]:
    """Partitioned table -> its direct partitions, from the `TABLE ATTACH` entries (each
    depends on the partition's and the parent's TABLE entries)."""
    by_id = {e.id: e for e in entries if e.desc == "TABLE"}
    out: dict[TableRef, list[TableRef]] = {}
    for e in entries:
        if e.desc != "TABLE ATTACH":
            continue
        tables = [by_id[d] for d in e.deps if d in by_id]
        ref = _ref(e)
        child = next((t for t in tables if t.names(ref.schema, ref.name)), None)
        parent = next((t for t in tables if t is not child), None)
        if child is not None and parent is not None:
            out.setdefault(_ref(parent), []).append(_ref(child))
    return out


def partition_tree(tree: dict[TableRef, list[TableRef]], root: TableRef) -> list[TableRef]:
    """Every partition under `root`, sub-partitions included (root itself left out)."""
    out: list[TableRef] = []
    todo = list(tree.get(root, []))
    while todo:
        t = todo.pop(0)
        if t not in out:
            out.append(t)
            todo.extend(tree.get(t, []))
    return out


@dataclass
class Selection:
    entries: list[TocEntry]  # in TOC order
    skipped: list[str]  # entries left out, with the reason
    tables: list[TableRef] = field(default_factory=list)  # requested + their partitions


def _closure(entries: list[TocEntry], seed: set[int], descs: frozenset[str]) -> set[int]:
    chosen = set(seed)
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e.id not in chosen and e.desc in descs and any(d in chosen for d in e.deps):
                chosen.add(e.id)
                changed = True
    return chosen


def _prerequisites(by_id: dict[int, TocEntry], chosen: set[int]) -> set[int]:
    need: set[int] = set()
    todo = [d for i in chosen for d in by_id[i].deps]
    while todo:
        dep = todo.pop()
        e = by_id.get(dep)
        if e is None or dep in need or dep in chosen or e.desc not in PREREQUISITES:
            continue
        need.add(dep)
        todo.extend(e.deps)
    # the current value of every sequence created here
    need |= {
        e.id for e in by_id.values() if e.desc == "SEQUENCE SET" and any(d in need for d in e.deps)
    }
    return need


def select_tables(
    entries: list[TocEntry],
    tables: list[TableRef],
    *,
    new_database: bool,
    relation_exists: Callable[[list[TableRef]], set[TableRef]],
) -> Selection:
    """The entries that (re)create `tables` with their data in the target database.

    new_database: the target was just created empty, so what the tables need (schemas,
    types, functions, sequences) is restored too. A partitioned table brings its whole
    partition tree, attached; a partition whose parent is neither selected nor in the
    target is refused (it would come back detached). Entries that need a relation the
    target does not have (e.g. a foreign key to a table that was not selected) are
    skipped."""
    by_id = {e.id: e for e in entries}
    tree = partitions(entries)
    tables = list(tables)
    for t in list(tables):
        tables += [p for p in partition_tree(tree, t) if p not in tables]
    seed = set()
    for t in tables:
        found = [e for e in entries if e.desc == "TABLE" and e.names(t.schema, t.name)]
        if not found:
            raise RestoreError(f"table {t.qualified} has no definition in the dump")
        seed.add(found[0].id)
    children = [e for e in entries if e.desc == "TABLE" and e.id not in seed and set(e.deps) & seed]
    if children:
        names = ", ".join(label(e).removeprefix("TABLE ").replace(" ", ".", 1) for e in children)
        raise RestoreError(
            f"the selected table(s) have partitions or inheritance children ({names}); "
            "select them too with --table"
        )
    chosen = _closure(entries, seed, SUBSIDIARY)
    # relations outside the selection that chosen entries depend on
    outside = {
        dep: by_id[dep]
        for i in chosen
        for dep in by_id[i].deps
        if dep in by_id and dep not in chosen and by_id[dep].desc in RELATIONS
    }
    refs = {dep: _ref(e) for dep, e in outside.items()}
    present = set() if new_database else relation_exists(list(set(refs.values())))
    missing = {dep for dep, ref in refs.items() if ref not in present}
    skipped: list[str] = []
    dropped = True
    while dropped:
        dropped = False
        for i in sorted(chosen):
            e = by_id[i]
            bad = [d for d in e.deps if d in missing]
            if i not in seed and bad and e.desc == "TABLE ATTACH":
                raise RestoreError(
                    f"partition {_ref(e).qualified} would come back detached: its parent "
                    f"{_ref(by_id[bad[0]]).qualified} is neither selected nor in the target; "
                    "select the parent with --table (it brings its whole partition tree)"
                )
            if i not in seed and bad:
                chosen.discard(i)
                missing.add(i)
                skipped.append(f"{label(e)} (needs {label(by_id[bad[0]])})")
                dropped = True
    if new_database:
        chosen |= _prerequisites(by_id, chosen)
    chosen |= {e.id for e in entries if e.desc in SPECIAL}
    return Selection([e for e in entries if e.id in chosen], skipped, tables)


def list_file(selection: Selection) -> str:
    """Contents for `pg_restore --use-list`."""
    return "".join(e.line + "\n" for e in selection.entries)
