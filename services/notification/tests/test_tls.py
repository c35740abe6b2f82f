"""tls.py: certificates reloaded when their files change (cert-manager rotates them in place),
into a new context (a CA removed is no longer trusted), a change that does not load kept out;
the peer table the policy reads, matched whole; calls that skip the front refused; handshakes
bounded."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh.notification.v1 import notification_pb2_grpc
from bookmesh_notification import server
from bookmesh_notification.__main__ import _authorizer
from bookmesh_notification.api import NotificationService
from bookmesh_notification.auth import PeerInfo, SpiffeId, spiffe_id_of
from bookmesh_notification.config import Config
from bookmesh_notification.readiness import Readiness
from bookmesh_notification.stack import ServerStack
from bookmesh_notification.store.sqlite import SqliteStore
from bookmesh_notification.tls import FrontOnly, TlsFront
from bookmesh_notification.watch import NoticeHub, Watchers
from support.pki import issue, make_authority, make_pki
from support.tokens import token


def test_rotated_files_are_loaded_and_broken_ones_kept_out(tmp_path):
    pki = make_pki(tmp_path, ["notification"])
    front = TlsFront(Config.from_env({"BOOKMESH_PKI_DIR": str(pki)}), backend_port=1)
    assert not front.reload_if_changed(), "nothing changed"
    issue(pki, "notification")
    os.utime(pki / "notification.crt", ns=(1, 1))  # a new stamp, whatever the clock's resolution
    assert front.reload_if_changed()
    (pki / "notification.key").write_text("half a key")
    assert not front.reload_if_changed(), "the old credentials stay"


def client_context(ca, workload: tuple | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca))
    if workload is not None:
        context.load_cert_chain(*(str(path) for path in workload))
    context.set_alpn_protocols(["h2"])
    return context


def handshake(server_side: ssl.SSLContext, client_side: ssl.SSLContext) -> dict:
    """A TLS handshake in memory: the client certificate as the server saw it, or SSLError."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_side.wrap_bio(client_in, client_out, server_hostname="notification")
    service = server_side.wrap_bio(server_in, server_out, server_side=True)
    done: set = set()
    for _ in range(10):
        for end in (client, service):
            if end not in done:
                try:
                    end.do_handshake()
                    done.add(end)
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if len(done) == 2:  # TLS 1.3: the server checks the client's certificate last
            break
    return service.getpeercert()


def test_a_reload_trusts_only_the_new_authorities(tmp_path):
    pki = make_pki(tmp_path / "pki", ["notification", "check"])
    old_check = (tmp_path / "old-check.crt", tmp_path / "old-check.key")
    for path, name in zip(old_check, ("check.crt", "check.key")):
        shutil.copy(pki / name, path)
    front = TlsFront(Config.from_env({"BOOKMESH_PKI_DIR": str(pki)}), backend_port=1)
    accepted = handshake(front._context, client_context(pki / "ca.crt", old_check))
    assert spiffe_id_of(accepted) == SpiffeId("bookmesh.local", "bookmesh", "check")

    # The authority replaced: a new CA, the service's certificate from it, the old CA gone.
    new = tmp_path / "new-ca"
    make_authority(new)
    issue(pki, "notification", authority=new)
    issue(new, "check")
    shutil.copy(new / "ca.crt", pki / "ca.crt")
    os.utime(pki / "ca.crt", ns=(2, 2))
    assert front.reload_if_changed()

    with pytest.raises(ssl.SSLError):
        handshake(front._context, client_context(new / "ca.crt", old_check))
    renewed = handshake(front._context, client_context(new / "ca.crt", (new / "check.crt", new / "check.key")))
    assert spiffe_id_of(renewed) == SpiffeId("bookmesh.local", "bookmesh", "check")


def test_a_call_is_matched_to_its_connection_by_the_whole_peer_address(tmp_path):
    pki = make_pki(tmp_path, ["notification"])
    front = TlsFront(Config.from_env({"BOOKMESH_PKI_DIR": str(pki)}), backend_port=1)
    peer = PeerInfo("10.0.0.7:40000", SpiffeId("bookmesh.local", "bookmesh", "check"))
    front._peers["ipv4:127.0.0.1:54321"] = peer
    assert front.peer_of("ipv4:127.0.0.1:54321") == peer
    assert front.peer_of("ipv4:127.0.0.2:54321") is None, "the same port from another address"
    assert front.peer_of("ipv6:[::1]:54321") is None
    assert front.peer_of("ipv4:127.0.0.1:1") is None
    assert front.peer_of("unix:/tmp/x:54321") is None


def test_only_one_spiffe_id_names_a_workload():
    one = {"subjectAltName": (("DNS", "localhost"), ("URI", "spiffe://bookmesh.local/ns/bookmesh/sa/check"))}
    two = {"subjectAltName": one["subjectAltName"] + (("URI", "spiffe://bookmesh.local/ns/bookmesh/sa/rental"),)}
    assert spiffe_id_of(one) == SpiffeId("bookmesh.local", "bookmesh", "check")
    assert spiffe_id_of(two) is None
    assert spiffe_id_of(None) is None and spiffe_id_of({}) is None


@pytest.fixture()
async def wired(tmp_path):
    """The service's gRPC server behind its TLS front, wired as __main__ does, in process."""
    pki = make_pki(tmp_path / "pki", ["notification", "check"])
    config = Config.from_env({"BOOKMESH_PKI_DIR": str(pki), "BOOKMESH_LISTEN": "127.0.0.1:0"})
    readiness = Readiness()
    store = SqliteStore(tmp_path / "notification.db")
    await store.open()
    front = None
    stack = ServerStack(
        server.SERVICE_NAME, readiness, _authorizer(config), lambda peer: front.peer_of(peer), 5.0, 16
    )
    guard = FrontOnly(lambda peer: front is not None and front.peer_of(peer) is not None)
    api = NotificationService(store, Watchers(store, NoticeHub(), readiness, 8, 8))
    grpc_server, health = server.build(config, readiness, api, [guard, stack])
    await server.follow_readiness(health, readiness)
    await readiness.set_serving(True)
    backend = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    front = TlsFront(config, backend)
    port = await front.start()
    yield pki, port, backend
    front.stop_accepting()
    await grpc_server.stop(None)
    await front.close()
    await store.close()


async def test_a_call_that_skips_the_tls_front_is_refused(wired):
    pki, port, backend = wired
    librarian = (("authorization", f"Bearer {token(pki, 'librarian')}"),)
    request = pb.ListNoticesRequest(member_id=str(uuid.uuid4()))
    credentials = grpc.ssl_channel_credentials((pki / "ca.crt").read_bytes())
    options = [("grpc.ssl_target_name_override", "notification")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        await notification_pb2_grpc.NotificationServiceStub(channel).ListNotices(request, metadata=librarian, timeout=5)
        check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING

    # The loopback port behind it, dialed directly (any local process can): no TLS, refused.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await notification_pb2_grpc.NotificationServiceStub(channel).ListNotices(
                request, metadata=librarian, timeout=5
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await watch.read()
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_handshakes_in_progress_are_bounded(tmp_path):
    pki = make_pki(tmp_path, ["notification", "check"])
    config = Config.from_env({"BOOKMESH_PKI_DIR": str(pki), "BOOKMESH_LISTEN": "127.0.0.1:0"})
    front = TlsFront(config, backend_port=1, max_handshakes=2, handshake_timeout=1.0)
    port = await front.start()
    try:
        # Two clients that connect and say nothing hold both handshake slots.
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        context = client_context(pki / "ca.crt")
        third = asyncio.ensure_future(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="notification")
        )
        await asyncio.sleep(0.3)
        assert not third.done(), "waits for a slot"
        silent[0][1].close()  # one gives up: its slot goes to the waiting one
        started = time.monotonic()
        _, writer = await asyncio.wait_for(third, 2)
        assert time.monotonic() - started < 0.5
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.close()
        # The other is dropped once the handshake timeout is over.
        assert await asyncio.wait_for(silent[1][0].read(), 3) == b""
    finally:
        await front.close()
