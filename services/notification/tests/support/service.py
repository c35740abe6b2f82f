"""The notification service as a real process (`python -m bookmesh_notification`), as the
launcher starts it: started with an environment, waited for until SERVING, stopped with
SIGTERM (its drain), its JSON log lines kept in a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_DIR = Path(__file__).resolve().parents[2]
SERVICE_NAME = "bookmesh.notification.v1.NotificationService"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def eventually(check, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Polls `check` until it returns something truthy (returned), or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = check()
        except AssertionError as error:  # a check may assert; keep polling
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last: {last!r})")
        time.sleep(interval)


class Credentials:
    """How a test calls the service: TLS against `ca`, optionally as a workload (certificate
    and key), optionally with a user token."""

    def __init__(self, ca: Path | None = None, workload: tuple[Path, Path] | None = None, token: str | None = None):
        self.ca, self.workload, self.token = ca, workload, token

    def channel(self, target: str) -> grpc.Channel:
        if self.ca is None:
            return grpc.insecure_channel(target)
        key = cert = None
        if self.workload is not None:
            cert, key = (path.read_bytes() for path in self.workload)
        credentials = grpc.ssl_channel_credentials(self.ca.read_bytes(), private_key=key, certificate_chain=cert)
        return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "notification")])

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


class Service:
    """One process of the service."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "notification") -> None:
        self.port = int(env.get("BOOKMESH_LISTEN", "127.0.0.1:0").rsplit(":", 1)[1]) or free_port()
        # Two ports asked for one after the other may be the same one (the first was free
        # again): the service would then fail to bind its admin port.
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "BOOKMESH_LISTEN": f"127.0.0.1:{self.port}",
            "BOOKMESH_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            "BOOKMESH_LOG_FORMAT": "json",
            "BOOKMESH_DATA_DIR": str(workdir / "data"),
            **env,
        }
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Service":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bookmesh_notification"],
            env=self.env,
            cwd=SERVICE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def health(self, credentials: Credentials, service: str = SERVICE_NAME) -> int | None:
        with credentials.channel(self.target) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
            except grpc.RpcError:
                return None
        return response.status

    def wait_serving(self, credentials: Credentials, timeout: float = 30.0) -> "Service":
        def serving() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}):\n{self.text()[-4000:]}")
            return self.health(credentials) == health_pb2.HealthCheckResponse.SERVING

        eventually(serving, timeout, 0.05, "the service SERVING")
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code (0 after a clean drain)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def json_lines(self) -> list[dict]:
        lines = []
        for line in self.text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=2) as response:
            return response.read().decode()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text page, or None."""
    for line in metrics.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] != name:
            continue
        if all(f'{key}="{label}"' in series for key, label in labels.items()):
            return float(value)
    return None
