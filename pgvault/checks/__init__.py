"""Health checks for `pgvault check`: one module per group, a runner, and the report.

backups.py  backup_age, backup_size, backup_duration, backup_result   (catalog)
wal.py      upload_lag (spool backlog, RPO), wal_gaps                  (catalog, spool)
archiver.py archiver                                                   (PostgreSQL)
infra.py    queues (RabbitMQ), disk (spool filesystem), store (canary)
drills.py   drills                                                     (catalog)
runner.py   running them, text/Nagios/JSON output, publishing alerts and resolves
"""

from pgvault.checks.base import CheckContext, CheckResult, Status

__all__ = ["CheckContext", "CheckResult", "Status"]
