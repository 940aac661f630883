"""A private RabbitMQ for tests that stop and restart the broker (never the machine's shared one).

:func:`run_rabbitmq` starts ``rabbitmq-server`` as this user on free loopback ports with its own
node name, data and log directories; :meth:`RabbitMQ.stop` / :meth:`RabbitMQ.start` restart it
with the same data, so durable queues and persistent messages survive, as in production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers import free_port, require

__all__ = ["RabbitMQ", "run_rabbitmq"]

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class RabbitMQ:
    """A private broker: ``url`` for Celery; ``stop()``/``start()`` to take it away and back."""

    workdir: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"cdsstest-{uuid.uuid4().hex[:8]}@localhost")
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.workdir / "home"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "data"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq"),
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbitmq.pid"),
        )
        return env

    def start(self, timeout: float = 120) -> None:
        for sub in ("home", "data", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        self.starts += 1
        log = (self.workdir / f"server-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(SERVER)], env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.workdir / f"server-{self.starts}.log").read_text(errors="replace")
                raise RuntimeError(f"private RabbitMQ did not start:\n{text[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> None:
        """Stop the broker (SIGTERM to its own process group: a clean broker shutdown)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        deadline = time.monotonic() + timeout
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.proc = None


@contextmanager
def run_rabbitmq(workdir: Path) -> Iterator[RabbitMQ]:
    """A private RabbitMQ on free ports; skipped (laptop) / failed (CI) when it is not installed."""
    require(SERVER.is_file(), f"RabbitMQ ({SERVER})", "install it with `apt-get install rabbitmq-server`")
    broker = RabbitMQ(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
