"""The few config values the archive_command path needs, read without pydantic.

(No pathlib or dataclasses either: every import here is paid once per WAL segment.)

`pgvault wal-archive` runs once per WAL segment, so it must not pay for pydantic,
typer or pika imports (DESIGN invariant 2). It reads the same TOML file and the same
PGVAULT_* environment overrides as `pgvault.config`, for the keys it uses only;
tests check that both loaders agree.
"""

from __future__ import annotations

import os
import tomllib

from pgvault.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/pgvault/pgvault.toml"
DEFAULT_CLUSTER = "main"
DEFAULT_SPOOL_DIR = "/backup/postgres"
DEFAULT_CATALOG_PATH = "/backup/catalog.sqlite"


def config_path(explicit: str | None) -> str:
    """`--config` wins, then PGVAULT_CONFIG, then the packaged default location."""
    return explicit or os.environ.get("PGVAULT_CONFIG") or DEFAULT_CONFIG_PATH


def read_toml(path: str | os.PathLike[str]) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (pass --config or set PGVAULT_CONFIG)"
        ) from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by this user") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


class LightConfig:
    __slots__ = ("catalog_path", "cluster", "spool_dir")

    def __init__(self, cluster: str, spool_dir: str, catalog_path: str) -> None:
        self.cluster = cluster
        self.spool_dir = spool_dir
        self.catalog_path = catalog_path


def load_light(explicit: str | None = None) -> LightConfig:
    data = read_toml(config_path(explicit))
    cluster = os.environ.get("PGVAULT_CLUSTER") or data.get("cluster", DEFAULT_CLUSTER)
    spool = os.environ.get("PGVAULT_SPOOL_DIR") or data.get("spool_dir", DEFAULT_SPOOL_DIR)
    if not isinstance(cluster, str) or not cluster:
        raise ConfigError("config: cluster must be a non-empty string")
    if not isinstance(spool, str) or not spool:
        raise ConfigError("config: spool_dir must be a directory path")
    catalog = os.environ.get("PGVAULT_CATALOG_PATH") or data.get(
        "catalog_path", DEFAULT_CATALOG_PATH
    )
    if not isinstance(catalog, str) or not catalog:
        raise ConfigError("config: catalog_path must be a file path")
    return LightConfig(cluster=cluster, spool_dir=spool, catalog_path=catalog)
