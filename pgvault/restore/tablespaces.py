"""Where a restore puts tablespaces, decided and checked before replay (invariant 11).

Two kinds reach a restored cluster: tablespaces the base backup holds (their own tar,
linked by `tablespace_map`) and tablespaces created by replayed WAL after the backup
(the catalog knows their records from pg_waldump). Each goes to a directory of the
restore's own: `<target-dir>/pg_tblspc_data/<name or oid>` by default, or what
`--tablespace-map KEY=DIR` says (KEY: the tablespace's name, oid or original location).
A mapping that would reach into a source tablespace is refused before anything runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pgvault.catalog.tablespaces import ReplayTablespaces
from pgvault.errors import RestoreError, UsageError
from pgvault.pgtools import find_tool
from pgvault.restore.tblspc_guard import GUARD_FILE, GUARD_VERSION, link_tablespace

DEFAULT_SUBDIR = "pg_tblspc_data"


@dataclass(frozen=True)
class Source:
    """A tablespace of the source cluster the restore will meet."""

    oid: int
    location: str
    name: str = ""  # known for a base backup's tablespaces, not for WAL-created ones
    in_backup: bool = False


@dataclass(frozen=True)
class Mapped:
    source: Source
    directory: Path

    def as_dict(self) -> dict[str, object]:
        return {
            "oid": self.source.oid,
            "name": self.source.name or None,
            "source_location": self.source.location,
            "restored_to": str(self.directory),
            "from": "base backup" if self.source.in_backup else "WAL replay",
        }


def parse_map(items: list[str]) -> dict[str, Path]:
    """`--tablespace-map KEY=DIR` options into {KEY: DIR}; a usage error names the bad one."""
    out: dict[str, Path] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--tablespace-map {item!r}: expected NAME=DIR (or OID=DIR)")
        directory = Path(value)
        if not directory.is_absolute():
            raise UsageError(f"--tablespace-map {item!r}: DIR must be an absolute path")
        out[key.rstrip("/") if key.startswith("/") else key] = directory
    return out


def _overlaps(a: Path, b: Path) -> bool:
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def plan_mapping(
    target_dir: Path, sources: list[Source], user_map: dict[str, Path]
) -> list[Mapped]:
    """One directory per source tablespace; refuses before replay what is unsafe."""
    mapped: list[Mapped] = []
    used: set[str] = set()
    for src in sources:
        keys = [str(src.oid), src.location.rstrip("/"), src.name]
        hit = next((k for k in keys if k and k in user_map), None)
        if hit is not None:
            used.add(hit)
            directory = user_map[hit]
        else:
            directory = target_dir / DEFAULT_SUBDIR / (src.name or str(src.oid))
        mapped.append(Mapped(src, directory))
    unknown = sorted(set(user_map) - used)
    if unknown:
        known = ", ".join(f"{s.name or s.oid} ({s.location})" for s in sources) or "none"
        raise UsageError(
            f"--tablespace-map {unknown[0]}: this restore meets no such tablespace "
            f"(it meets: {known})"
        )
    for m in mapped:
        for src in sources:
            if src.location and _overlaps(m.directory, Path(src.location)):
                raise RestoreError(
                    f"tablespace {m.source.name or m.source.oid} would be restored into "
                    f"{m.directory}, which overlaps the source tablespace directory "
                    f"{src.location}; choose another with --tablespace-map "
                    f"{m.source.name or m.source.oid}=DIR"
                )
        if m.directory.exists() and any(m.directory.iterdir()):
            raise RestoreError(
                f"tablespace {m.source.name or m.source.oid}: {m.directory} is not empty; "
                f"refusing to overwrite it (--tablespace-map {m.source.name or m.source.oid}=DIR)"
            )
    dirs = [os.path.realpath(m.directory) for m in mapped]
    if len(set(dirs)) != len(dirs):
        raise UsageError("--tablespace-map: two tablespaces mapped to the same directory")
    return mapped


def sources_of(replay: ReplayTablespaces, in_backup: list[Source]) -> list[Source]:
    seen = {s.oid for s in in_backup}
    out = list(in_backup)
    for event in replay.created:
        if event.oid not in seen:
            seen.add(event.oid)
            out.append(Source(event.oid, event.location))
    return out


def install_guard(
    target_dir: Path,
    replay: ReplayTablespaces,
    mapped: list[Mapped],
    user_map: dict[str, Path],
    bin_dir: str,
) -> None:
    """Write the guard file wal-restore obeys and link every WAL-created tablespace."""
    segments: dict[str, list[str]] = {}
    for event in replay.created:
        segments.setdefault(event.segment, []).append(event.lsn)
    by_location = {
        m.source.location.rstrip("/"): str(m.directory) for m in mapped if m.source.location
    }
    by_location.update({k: str(v) for k, v in user_map.items() if k.startswith("/")})
    guard = {
        "version": GUARD_VERSION,
        "ranges": [list(r) for r in replay.ranges],
        "segments": segments,
        "straddles": replay.straddles,
        "unscanned": replay.unscanned,
        "map": {str(m.source.oid): str(m.directory) for m in mapped},
        "by_location": by_location,
        "default_dir": str(target_dir / DEFAULT_SUBDIR),
        "pg_waldump": find_tool("pg_waldump", bin_dir),
    }
    (target_dir / GUARD_FILE).write_text(json.dumps(guard, indent=1) + "\n")
    for m in mapped:
        if not m.source.in_backup:
            link_tablespace(str(target_dir), m.source.oid, str(m.directory))


def rewrite_tablespace_map(target_dir: Path, in_backup: list[Mapped]) -> None:
    """tablespace_map ("<oid> <path>" per line) with each path replaced by its mapping: at
    start-up PostgreSQL replaces pg_tblspc links with what this file says."""
    path = target_dir / "tablespace_map"
    if not path.exists():
        if in_backup:
            raise RestoreError("the base backup has tablespaces but no tablespace_map")
        return
    where = {str(m.source.oid): str(m.directory) for m in in_backup}
    lines = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        oid, _, _location = line.partition(" ")
        if oid not in where:
            raise RestoreError(f"tablespace_map names tablespace {oid}, which the backup lacks")
        lines.append(f"{oid} {where[oid]}")
    path.write_text("".join(x + "\n" for x in lines))
