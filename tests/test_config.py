"""Config loading: one-line errors naming the key, env overrides, secrets masked, and the
stdlib loader of the archive path agreeing with the full one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pgvault.config import load_settings
from pgvault.errors import ConfigError
from pgvault.lightconf import load_light
from tests.env import write_toml


def cfg(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "pgvault.toml"
    write_toml(path, data)
    return path


def test_defaults_and_file_values(tmp_path: Path) -> None:
    s = load_settings(cfg(tmp_path, {"cluster": "prod", "storage": {"type": "s3", "bucket": "b"}}))
    assert s.cluster == "prod" and s.storage.type == "s3" and s.storage.bucket == "b"
    assert s.retention.wal_days == 7 and s.alerts.max_backup_age_hours == 25


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cfg(tmp_path, {"cluster": "prod", "storage": {"bucket": "file"}})
    monkeypatch.setenv("PGVAULT_STORAGE__BUCKET", "env")
    monkeypatch.setenv("PGVAULT_RETENTION__WAL_DAYS", "3")
    s = load_settings(path)
    assert s.storage.bucket == "env" and s.retention.wal_days == 3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"storage": {"type": "ftp"}}, "storage.type"),
        ({"storage": {"bukket": "x"}}, "storage.bukket"),
        ({"cluster": "Prod Cluster"}, "cluster"),
        ({"postgres": {"port": 99999}}, "postgres.port"),
        ({"encryption": {"recipients": ["ssh-rsa AAAA"]}}, "encryption.recipients"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(
    tmp_path: Path, data: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cfg(tmp_path, data))
    message = str(info.value)
    assert f": {key}" in message and "\n" not in message


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    path = cfg(tmp_path, {"storage": {"type": "ftp"}})
    proc = subprocess.run(
        [sys.executable, "-m", "pgvault", "--config", str(path), "config", "show"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("pgvault: error: config") and proc.stderr.count("\n") == 1


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    path = cfg(
        tmp_path,
        {
            "broker": {"url": "amqp://ops:hunter2@mq:5672/%2F"},
            "alerts": {"discord_webhook_url": "https://discord.example/api/webhooks/1/tok3n"},
        },
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pgvault", "--config", str(path), "config", "show", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "hunter2" not in proc.stdout and "tok3n" not in proc.stdout
    data = json.loads(proc.stdout)
    assert data["broker"]["url"] == "amqp://ops:****@mq:5672/%2F"


def test_light_loader_agrees_with_full_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cfg(tmp_path, {"cluster": "c1", "spool_dir": "/srv/spool"})
    for env in ({}, {"PGVAULT_SPOOL_DIR": "/other", "PGVAULT_CLUSTER": "c2"}):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        full, light = load_settings(path), load_light(str(path))
        assert (full.cluster, str(full.spool_dir)) == (light.cluster, light.spool_dir)
    monkeypatch.setenv("PGVAULT_CONFIG", str(path))
    assert load_light(None).cluster == load_settings(None).cluster
