"""Object keys (DESIGN "Object layout in the store"):

{prefix}/{cluster}/wal/{timeline:08X}/{segment}.zst          (+ {tli}.history)
{prefix}/{cluster}/logical/{db}/{backup_id}/{db}.dump + manifest.json
{prefix}/{cluster}/physical/{backup_id}/base.tar.zst, pg_wal.tar.zst, backup_manifest, manifest.json
"""

from __future__ import annotations

from dataclasses import dataclass

from pgvault.walfile import parse_name


@dataclass(frozen=True)
class Layout:
    prefix: str
    cluster: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.cluster}" if self.prefix else self.cluster

    def kind_root(self, kind: str) -> str:
        return f"{self.root}/{'wal' if kind == 'history' else kind}/"

    def key(self, kind: str, name: str, filename: str) -> str:
        """Object key of one file of an artifact."""
        if kind in ("wal", "history"):
            wal = parse_name(name)
            return f"{self.root}/wal/{wal.timeline:08X}/{name}{wal.store_suffix()}"
        if kind == "logical":
            db, _, backup_id = name.partition("/")
            return f"{self.root}/logical/{db}/{backup_id}/{filename}"
        if kind == "physical":
            return f"{self.root}/physical/{name}/{filename}"
        raise ValueError(f"unknown artifact kind {kind!r}")

    def parse(self, key: str) -> tuple[str, str, str] | None:
        """(kind, artifact name, filename) for a key under this cluster, else None."""
        root = self.root + "/"
        if not key.startswith(root):
            return None
        parts = key[len(root) :].split("/")
        if parts[0] == "wal" and len(parts) == 3:
            filename = parts[2]
            name = filename.removesuffix(".zst")
            try:
                wal = parse_name(name)
            except ValueError:
                return None
            if filename != name + wal.store_suffix() or parts[1] != f"{wal.timeline:08X}":
                return None
            return wal.kind, name, name
        if parts[0] == "logical" and len(parts) == 4:
            return "logical", f"{parts[1]}/{parts[2]}", parts[3]
        if parts[0] == "physical" and len(parts) == 3:
            return "physical", parts[1], parts[2]
        return None
