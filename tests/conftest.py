"""Shared fixtures: RabbitMQ, moto's S3 server over HTTP, a pgvault binary for the
postgres user, and per-test pgvault environments.

Broker: $PGVAULT_TEST_AMQP_URL, else 127.0.0.1:5672, else a testcontainers RabbitMQ
when a Docker engine answers; with CI=true a missing broker fails the run.

Every test that asks (directly or through another fixture) for RabbitMQ, moto's S3 or a
pgvault environment with clusters is marked `needs_services`; `make test-fast` deselects
them and runs the rest, the in-process `harness` tests included, with no service at all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from pgvault.config import StorageSettings
from pgvault.storage import ObjectStore, open_store
from tests.env import PgvaultEnv
from tests.harness import Harness
from tests.pgcluster import free_port
from tests.pgvenv import pgvault_for_postgres

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
# fixtures that reach a running service (RabbitMQ, moto's S3 server, PostgreSQL clusters)
SERVICE_FIXTURES = frozenset({"amqp_url", "s3_endpoint", "make_env"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_services)


def no_services_here(what: str) -> None:
    """Under `make test-fast` (PGVAULT_TEST_NO_SERVICES=1) a test that reaches a service
    without being marked `needs_services` fails instead of skipping or waiting."""
    if os.environ.get("PGVAULT_TEST_NO_SERVICES") == "1":
        pytest.fail(
            f"{what} requested under PGVAULT_TEST_NO_SERVICES=1: mark the test needs_services"
        )


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), 3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    no_services_here("RabbitMQ")
    url = os.environ.get("PGVAULT_TEST_AMQP_URL") or LOCAL_AMQP
    if _reachable(url):
        yield url
        return
    try:
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-not-found]

        with RabbitMqContainer("rabbitmq:3.13") as rmq:
            host, port = rmq.get_container_host_ip(), rmq.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/%2F"
            return
    except Exception as exc:  # no testcontainers or no Docker engine
        reason = f"no RabbitMQ at {url} and no container ({type(exc).__name__})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode: real HTTP, but it does not check checksums."""
    no_services_here("moto's S3 server")
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert moto, "moto_server not installed (pip install 'moto[server]')"
    log = open(Path(tempfile.gettempdir()) / f"moto-{port}.log", "w")
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def make_bucket(endpoint: str) -> str:
    bucket = f"b{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def pgvault_bin() -> Path:
    return pgvault_for_postgres()


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="pgvault-test-"))
    os.chmod(base, 0o755)
    yield base
    if not os.environ.get("PGVAULT_TEST_KEEP"):
        shutil.rmtree(base, ignore_errors=True)


EnvFactory = Callable[..., PgvaultEnv]


@pytest.fixture
def make_env(
    amqp_url: str, pgvault_bin: Path, workdir: Path, request: pytest.FixtureRequest
) -> Iterator[EnvFactory]:
    envs: list[PgvaultEnv] = []

    def factory(storage: str = "local", extra: dict[str, Any] | None = None) -> PgvaultEnv:
        base = workdir / f"env{len(envs)}"
        base.mkdir()
        if storage == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            conf: dict[str, Any] = {
                "type": "s3",
                "endpoint_url": endpoint,
                "bucket": make_bucket(endpoint),
                "prefix": "pg",
                "region": "us-east-1",
                "path_style": True,
                "part_size_mb": 5,
            }
        else:
            conf = {"type": "local", "path": str(base / "store"), "prefix": "pg"}
        env = PgvaultEnv(base, amqp_url, conf, pgvault_bin, extra)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The pipeline in this process: stub broker, local store, catalog, real stages."""
    h = Harness(tmp_path / "pgvault")
    yield h
    h.close()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.needs_services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same tests against the local store and moto's S3 server (5 MiB parts, so
    multipart uploads are exercised with small files)."""
    if request.param == "local":
        return open_store(StorageSettings(type="local", path=tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(
        StorageSettings(
            type="s3",
            endpoint_url=endpoint,
            bucket=make_bucket(endpoint),
            region="us-east-1",
            path_style=True,
            part_size_mb=5,
        )
    )
