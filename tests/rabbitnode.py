"""A RabbitMQ node of the test's own: started, stopped and started again by the test.

The shared node on 127.0.0.1:5672 is never touched: this one has its own node name,
AMQP and distribution ports, database, logs, config and (empty) plugin list, all in a
temporary directory, and is controlled with `rabbitmqctl -n <its name>`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RabbitNodeError(RuntimeError):
    pass


class PrivateRabbit:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"pgvt{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _tool(self, tool: str) -> str:
        path = RABBIT_BIN / tool
        found = str(path) if path.exists() else shutil.which(tool)
        if not found:
            raise RabbitNodeError(f"{tool} not installed")
        return found

    def env(self) -> dict[str, str]:
        conf = self.base / "rabbitmq.conf"
        return dict(
            os.environ,
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(conf.with_suffix("")),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "rabbit.pid"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
        )

    def start(self, timeout: float = 90) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\nlog.console = false\nlog.file.level = warning\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "advanced.config").write_text("[].\n")
        log = open(self.base / "server.out", "ab")
        self.proc = subprocess.Popen(
            [self._tool("rabbitmq-server")],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_up(timeout)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._tool("rabbitmqctl"), "-q", "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.base / "server.out").read_text(errors="replace")[-400:]
                raise RabbitNodeError(f"rabbitmq-server exited {self.proc.returncode}: {tail}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        raise RabbitNodeError(f"private RabbitMQ node did not listen on {self.port} in {timeout}s")

    def stop_app(self) -> None:
        proc = self.ctl("stop_app")
        if proc.returncode != 0:
            raise RabbitNodeError(f"stop_app: {proc.stderr.strip()[:300]}")

    def start_app(self) -> None:
        proc = self.ctl("start_app")
        if proc.returncode != 0:
            raise RabbitNodeError(f"start_app: {proc.stderr.strip()[:300]}")
        self.wait_up()

    def close(self) -> None:
        if self.proc is None:
            return
        self.ctl("stop", timeout=60)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        self.proc = None
