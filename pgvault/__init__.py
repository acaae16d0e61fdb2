"""pgvault: PostgreSQL backups you can prove.

This module must stay free of imports: `pgvault wal-archive` runs on every WAL segment
and imports the package root on its hot path (DESIGN invariant 2).
"""

__version__ = "0.1.0"
