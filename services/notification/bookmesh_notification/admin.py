"""The admin HTTP port (BOOKMESH_ADMIN_LISTEN; `make run` uses the gRPC port + 1000), apart from
gRPC so scrapes and probes never compete with traffic, as the Rust services' (src/admin.rs):

- `GET /metrics`: Prometheus text;
- `GET /healthz`: 200 while the process runs, 503 once it failed (a background task died:
  restart it);
- `GET /readyz`: 200 when the store is open and answering and the service is not stopping,
  503 otherwise;
- `GET /faults`: this service injects no faults; it says so in the shape the gateway's fault
  page reads (`{"enabled": false, "faults": []}`).

Plain HTTP/1.x, one request per connection, the request read within 5 s and at most 16 KiB.
"""

from __future__ import annotations

import asyncio
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import telemetry
from .readiness import Readiness

log = logging.getLogger("bookmesh_notification.admin")

#: A request must arrive within this (a client that trickles bytes must not hold a task).
REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 16 * 1024


class AdminServer:
    def __init__(self, address: tuple[str, int], readiness: Readiness) -> None:
        self._address = address
        self._readiness = readiness
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        host, port = self._address
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_BYTES)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("admin HTTP listening (/metrics, /healthz, /readyz)", extra={"address": f"{host}:{bound}"})
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a request."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(telemetry.REGISTRY)
        if path == "/healthz":
            if self._readiness.alive:
                return 200, "text/plain", b"ok\n"
            return 503, "text/plain", f"failed: {self._readiness.failure}\n".encode()
        if path == "/readyz":
            if self._readiness.serving:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not ready\n"
        if path == "/faults":
            return 200, "application/json", json.dumps({"enabled": False, "faults": []}).encode()
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3:
                status, content_type, body = 400, "text/plain", b"bad request\n"
            else:
                status, content_type, body = self.respond(parts[0], parts[1])
                if parts[0] == "HEAD":
                    body = b""
        except asyncio.TimeoutError:
            status, content_type, body = 408, "text/plain", b"request timeout\n"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            408: "Request Timeout",
            503: "Service Unavailable",
        }[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode("latin-1")
            + body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
