"""mTLS on the service's port, as the Rust servers speak it (src/identity/tls.rs,
src/identity/transport.rs): the workload certificate `<pki>/notification.crt`, client
certificates **asked for but not required** (workloads present one, users come with a token,
and the policy decides), a presented certificate checked against the CA, and the caller's
SPIFFE ID read once per connection, right after the handshake.

grpcio can require client certificates or not ask for them at all, but not ask without
requiring. So this module terminates TLS itself (Python's ssl, `CERT_OPTIONAL`) and hands each
connection's bytes to the gRPC server on a loopback port that only this process dials; the
connection's identity is kept by the loopback connection's own port, which is what the gRPC
server reports as the call's peer (`peer_of`). Beside that it does what the Rust transport
does: a handshake timeout, a bound on open connections (`bookmesh_server_connections`,
`bookmesh_server_connections_refused_total{reason="limit"}`), and certificates reloaded when
their files change (cert-manager rotates them in place).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from . import telemetry
from .auth import PeerInfo, spiffe_id_of
from .config import Config

log = logging.getLogger("bookmesh_notification.tls")

#: A handshake that takes longer is dropped: a client that connects and says nothing must not
#: hold a slot.
HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 64 * 1024


def server_context(certificate: Path, key: Path, authorities: Path) -> ssl.SSLContext:
    """TLS 1.2+, HTTP/2 only, client certificates optional but verified when presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certificate), str(key))
    context.load_verify_locations(cafile=str(authorities))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["h2"])
    return context


class TlsFront:
    """Listens on the service's address with TLS and forwards each connection to the gRPC
    server at `127.0.0.1:<backend_port>`."""

    def __init__(self, config: Config, backend_port: int) -> None:
        self._config = config
        self._backend_port = backend_port
        self._context = server_context(config.certificate, config.private_key, config.authorities)
        self._stamps = self._file_stamps()
        self._peers: dict[int, PeerInfo] = {}
        self._open = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Starts listening; returns the port (the configured one, or the one picked for 0)."""
        host, port = self._config.listen
        self._server = await asyncio.start_server(
            self._serve,
            host,
            port,
            ssl=self._context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            backlog=1024,
        )
        return self._server.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        """Closes the listening socket; open connections go on until the gRPC server ends them."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Ends every connection still open."""
        self.stop_accepting()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    def peer_of(self, grpc_peer: str) -> PeerInfo | None:
        """The peer behind a call, from the gRPC server's view of it (`ipv4:127.0.0.1:PORT`)."""
        _, _, port = grpc_peer.rpartition(":")
        return self._peers.get(int(port)) if port.isdigit() else None

    # === certificates ===

    def _file_stamps(self) -> tuple:
        paths = (self._config.certificate, self._config.private_key, self._config.authorities)
        stamps = []
        for path in paths:
            try:
                stamps.append(path.stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def reload_if_changed(self) -> bool:
        """Loads the files again if one changed; a change that does not load (half-written, a
        key that does not match) keeps the current credentials and is logged."""
        stamps = self._file_stamps()
        if stamps == self._stamps:
            return False
        try:
            # The same context: new handshakes present the new certificate and trust the CA.
            self._context.load_cert_chain(str(self._config.certificate), str(self._config.private_key))
            self._context.load_verify_locations(cafile=str(self._config.authorities))
        except (OSError, ssl.SSLError) as error:
            log.warning("changed credentials do not load; keeping the current ones", extra={"error": str(error)})
            return False
        self._stamps = stamps
        log.info("credentials reloaded")
        return True

    async def watch_files(self, stopping: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self._config.tls_reload_interval)
                return
            except asyncio.TimeoutError:
                self.reload_if_changed()

    # === connections ===

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._connections.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._config.max_connections:
            telemetry.SERVER_CONNECTIONS_REFUSED.labels("limit").inc()
            writer.close()
            return
        tls = writer.get_extra_info("ssl_object")
        address = writer.get_extra_info("peername")
        remote = f"{address[0]}:{address[1]}" if address else None
        peer = PeerInfo(remote_addr=remote, workload=spiffe_id_of(tls.getpeercert() if tls else None))
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self._backend_port)
        except OSError as error:
            log.warning("the gRPC server does not answer on loopback", extra={"error": str(error)})
            writer.close()
            return
        port = backend_writer.get_extra_info("sockname")[1]
        # Registered before a byte is forwarded: no call can arrive on it before.
        self._peers[port] = peer
        self._open += 1
        telemetry.SERVER_CONNECTIONS.inc()
        pumps = [
            asyncio.ensure_future(_pump(reader, backend_writer)),
            asyncio.ensure_future(_pump(backend_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._peers.pop(port, None)
            self._open -= 1
            telemetry.SERVER_CONNECTIONS.dec()
            for side in (backend_writer, writer):
                side.close()
            for side in (backend_writer, writer):
                try:
                    await asyncio.wait_for(side.wait_closed(), timeout=1)
                except (OSError, ssl.SSLError, asyncio.TimeoutError):
                    pass


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copies bytes until `source` ends or either side fails."""
    try:
        while True:
            data = await source.read(_CHUNK)
            if not data:
                return
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return
