"""mTLS on the service's port, as the Rust servers speak it (src/identity/tls.rs,
src/identity/transport.rs): the workload certificate `<pki>/notification.crt`, client
certificates **asked for but not required** (workloads present one, users come with a token,
and the policy decides), a presented certificate checked against the CA, and the caller's
SPIFFE ID read once per connection, right after the handshake.

grpcio can require client certificates or not ask for them at all, but not ask without
requiring. So this module terminates TLS itself (Python's ssl, `CERT_OPTIONAL`) and hands each
connection's bytes to the gRPC server on a loopback port. The connection's identity is kept
under the loopback connection's address as the gRPC server reports the call's peer
(`ipv4:127.0.0.1:<port>`, `peer_of`). Any local process can dial that port too, skipping TLS:
`FrontOnly` refuses every call (UNAUTHENTICATED) whose peer is not a connection of the front.

Beside that it does what the Rust transport does: at most MAX_HANDSHAKES handshakes at once,
each within HANDSHAKE_TIMEOUT (connections accepted meanwhile wait for a slot, within the same
timeout), a bound on open connections (`bookmesh_server_connections`,
`bookmesh_server_connections_refused_total{reason="limit"}`), and certificates reloaded when
their files change (cert-manager rotates them in place) into a new context, used by the
handshakes that follow: a CA removed from the file is no longer trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl
from pathlib import Path
from typing import Callable

import grpc

from . import telemetry
from .auth import PeerInfo, spiffe_id_of
from .config import Config

log = logging.getLogger("bookmesh_notification.tls")

#: A handshake that takes longer is dropped: a client that connects and says nothing must not
#: hold a slot.
HANDSHAKE_TIMEOUT = 10.0
#: Handshakes in progress at once (src/identity/transport.rs MAX_HANDSHAKES): each costs CPU, and
#: a flood of them must not starve the connections already open.
MAX_HANDSHAKES = 256
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


class _Accepted(asyncio.Protocol):
    """A TCP connection just accepted. It reads nothing (the client's first bytes, its
    ClientHello, must stay in the socket for the handshake) until the front hands it to TLS."""

    def __init__(self, front: "TlsFront") -> None:
        self._front = front

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()
        self._front._accepted(transport)


class TlsFront:
    """Listens on the service's address with TLS and forwards each connection to the gRPC
    server at `127.0.0.1:<backend_port>`."""

    def __init__(
        self,
        config: Config,
        backend_port: int,
        *,
        max_handshakes: int = MAX_HANDSHAKES,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._config = config
        self._backend_port = backend_port
        self._context = server_context(config.certificate, config.private_key, config.authorities)
        self._stamps = self._file_stamps()
        #: By the gRPC server's name for the loopback connection: `ipv4:127.0.0.1:<port>`.
        self._peers: dict[str, PeerInfo] = {}
        self._handshakes = asyncio.Semaphore(max_handshakes)
        self._handshake_timeout = handshake_timeout
        #: Connections accepted and not closed yet: waiting for a handshake, in one, forwarded.
        self._open = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Starts listening; returns the port (the configured one, or the one picked for 0)."""
        host, port = self._config.listen
        loop = asyncio.get_running_loop()
        # Plain TCP: the handshake is ours to run (bounded, `_handshake`), not the server's.
        self._server = await loop.create_server(lambda: _Accepted(self), host, port, backlog=1024)
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
        """The peer behind a call, from the gRPC server's view of it (`ipv4:127.0.0.1:PORT`,
        matched whole); None for a connection that did not come through this front."""
        return self._peers.get(grpc_peer)

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
            # A new context, not the same one loaded again: load_verify_locations adds to what a
            # context trusts, so a CA removed from the file would stay trusted.
            context = server_context(self._config.certificate, self._config.private_key, self._config.authorities)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.warning("changed credentials do not load; keeping the current ones", extra={"error": str(error)})
            return False
        # New handshakes use it; connections already open keep what they agreed on.
        self._context = context
        self._stamps = stamps
        log.info("credentials reloaded")
        return True

    async def watch_files(self, stopping: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self._config.tls_reload_interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                self.reload_if_changed()
            except Exception:  # noqa: BLE001 - the current credentials stay; the next look tries again
                log.exception("credentials not reloaded")

    # === connections ===

    def _accepted(self, transport: asyncio.BaseTransport) -> None:
        """A new TCP connection: refused beyond the connection limit, else handed to a task."""
        if self._open >= self._config.max_connections:
            telemetry.SERVER_CONNECTIONS_REFUSED.labels("limit").inc()
            transport.abort()
            return
        self._open += 1
        telemetry.SERVER_CONNECTIONS.inc()
        task = asyncio.get_running_loop().create_task(self._serve(transport))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, transport: asyncio.BaseTransport) -> None:
        streams = None
        try:
            streams = await self._handshake(transport)
            if streams is not None:
                await self._forward(*streams)
        finally:
            if streams is None:
                transport.abort()  # closed already, unless cancelled (close()) before its handshake
            self._open -= 1
            telemetry.SERVER_CONNECTIONS.dec()

    async def _handshake(
        self, transport: asyncio.BaseTransport
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection's streams after its TLS handshake, run once one of MAX_HANDSHAKES
        slots is free; None (the connection closed) when no slot came within the handshake
        timeout, or the handshake failed or took longer."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._handshake_timeout):
                await self._handshakes.acquire()
        except TimeoutError:
            transport.abort()
            return None
        reader = asyncio.StreamReader(limit=_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The context of the moment: a reload applies from the next handshake on.
            tls = await loop.start_tls(
                transport,
                protocol,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except Exception as error:  # noqa: BLE001 - plaintext, an untrusted certificate, a timeout
            log.debug("TLS handshake failed", extra={"error": str(error) or type(error).__name__})
            transport.abort()
            return None
        finally:
            self._handshakes.release()
        # start_tls does not tell the protocol (it was made for an upgraded connection).
        protocol.connection_made(tls)
        return reader, asyncio.StreamWriter(tls, protocol, reader, loop)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        host, port = backend_writer.get_extra_info("sockname")[:2]
        key = f"ipv4:{host}:{port}"
        # Registered before a byte is forwarded: no call can arrive on it before.
        self._peers[key] = peer
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
            self._peers.pop(key, None)
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


class FrontOnly(grpc.aio.ServerInterceptor):
    """Refuses, UNAUTHENTICATED, every call (health and reflection too) that did not arrive on
    a connection of the TLS front: the gRPC server's loopback port is open to every local
    process, and a call there skipped TLS and the client certificate it checks."""

    def __init__(self, through_front: Callable[[str], bool]) -> None:
        self._through_front = through_front

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None
        wrap = lambda behavior: self._guard(behavior, details.method)  # noqa: E731
        return handler._replace(
            unary_unary=wrap(handler.unary_unary),
            unary_stream=wrap(handler.unary_stream),
            stream_unary=wrap(handler.stream_unary),
            stream_stream=wrap(handler.stream_stream),
        )

    async def _check(self, context, method: str) -> None:
        peer = context.peer()
        if not self._through_front(peer):
            log.warning("a call that did not come through TLS refused", extra={"peer": peer, "method": method})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "connect through the service's TLS port")

    def _guard(self, behavior, method: str):
        if behavior is None:
            return None
        # grpc serves an async generator and a coroutine differently: the guard is the same kind.
        if inspect.isasyncgenfunction(behavior):

            async def streaming(request, context):
                await self._check(context, method)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response

            return streaming

        async def answering(request, context):
            await self._check(context, method)
            return await behavior(request, context)

        return answering
