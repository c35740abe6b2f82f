"""Against the real mesh (run-tests.sh runs this under clients/with-mesh.sh): the Rust
services on their default ports, this service as its own process beside them, consuming
rental's real event feed over mTLS as the workload `notification`."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from bookmesh.notification.v1 import notification_pb2 as pb
from support import mesh
from support.calls import list_notices, refusal, stub, violated_fields
from support.service import Credentials, Service, eventually, sample

pytestmark = [
    pytest.mark.mesh,
    pytest.mark.skipif(not mesh.available(), reason="needs the mesh: run under clients/with-mesh.sh (run-tests.sh)"),
]

ROOT = Path(__file__).resolve().parents[3]
SUBSCRIPTION = "notification:rental"


@pytest.fixture(scope="module")
def rust():
    client = mesh.Mesh()
    yield client
    client.close()


@pytest.fixture(scope="module")
def notification(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("notification")
    pki = mesh.notification_pki(scratch)
    service = Service(
        {
            "BOOKMESH_PKI_DIR": str(pki),
            "BOOKMESH_RENTAL_ENDPOINTS": "http://127.0.0.1:50053",
            "BOOKMESH_SHUTDOWN_GRACE": "5s",
        },
        scratch,
    )
    service.pki = pki
    service.start().wait_serving(librarian(pki))
    yield service
    assert service.stop() == 0, service.text()[-3000:]


def librarian(pki: Path) -> Credentials:
    return Credentials(ca=pki / "ca.crt", token=mesh.token("librarian"))


def notices(service: Service, member_id: str) -> list[pb.Notice]:
    return list(list_notices(service.target, librarian(service.pki), member_id, page_size=100).notices)


def confirmed(service: Service, member_id: str) -> list[pb.Notice]:
    return [n for n in notices(service, member_id) if n.kind == pb.NOTICE_KIND_RENTAL_CONFIRMED]


def rent_and_wait(rust, member_id: str, book_id: str, traceparent: str | None = None):
    rust.rent(member_id, book_id, traceparent)
    return eventually(lambda: rust.confirmed_step(member_id, book_id), timeout=15, message="RentConfirmed")


def test_a_rent_produces_exactly_one_rental_confirmed_notice_within_a_second(rust, notification):
    member, book = rust.member(), rust.book("Dune")
    trace_id = uuid.uuid4().hex
    step = rent_and_wait(rust, member, book, f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
    [notice] = eventually(lambda: confirmed(notification, member), timeout=5, message="the notice")
    assert notice.event_id == step.event_id and notice.book_id == book and notice.title == "Dune"
    assert notice.text.startswith("You have “Dune” until ")
    written_after = notice.created_at.ToDatetime() - step.at.ToDatetime()
    assert written_after.total_seconds() < 1.0, f"written {written_after} after RentConfirmed"
    time.sleep(0.3)
    assert len(confirmed(notification, member)) == 1, "exactly one"
    # The notice's log line is in the rental saga's trace (the RentBook call's).
    lines = [
        line
        for line in notification.json_lines()
        if line.get("message") == "notice written" and line.get("event_id") == step.event_id
    ]
    assert [line["trace_id"] for line in lines] == [trace_id]


def test_replayed_events_add_nothing(rust, notification):
    member, book = rust.member(), rust.book()
    rent_and_wait(rust, member, book)
    eventually(lambda: confirmed(notification, member), timeout=5)
    before = {n.notice_id for n in notices(notification, member)}
    metrics = notification.metrics()
    position = sample(metrics, "bookmesh_consumer_position", subscription=SUBSCRIPTION)
    assert notification.stop() == 0
    # The cursor back to 0, the inbox kept: the whole feed is delivered again.
    with sqlite3.connect(Path(notification.env["BOOKMESH_DATA_DIR"]) / "notification.db") as db:
        db.execute("UPDATE consumer_cursors SET position = 0")
    notification.start().wait_serving(librarian(notification.pki))
    eventually(
        lambda: (
            (sample(notification.metrics(), "bookmesh_consumer_position", subscription=SUBSCRIPTION) or 0) >= position
        ),
        timeout=30,
        message="the replay back at the old position",
    )
    metrics = notification.metrics()
    assert sample(metrics, "bookmesh_consumer_events_total", subscription=SUBSCRIPTION, outcome="duplicate") >= position
    assert sample(metrics, "bookmesh_consumer_events_total", subscription=SUBSCRIPTION, outcome="applied") is None
    assert {n.notice_id for n in notices(notification, member)} == before


def test_a_restart_resumes_from_the_cursor(rust, notification):
    member, first, second = rust.member(), rust.book("Emma"), rust.book("Ulysses")
    rent_and_wait(rust, member, first)
    eventually(lambda: confirmed(notification, member), timeout=5)
    assert notification.stop() == 0
    cursor = cursor_of(notification)
    step = rent_and_wait(rust, member, second)  # while the service is down
    earlier = len(notification.json_lines())
    notification.start().wait_serving(librarian(notification.pki))
    got = eventually(
        lambda: len(c := confirmed(notification, member)) == 2 and c, timeout=10, message="the missed notice"
    )
    assert [n.title for n in got] == ["Ulysses", "Emma"]
    assert got[0].event_id == step.event_id
    assert len({n.notice_id for n in notices(notification, member)}) == len(notices(notification, member))
    restarted = notification.json_lines()[earlier:]
    subscribed = [line for line in restarted if line.get("message") == "subscribed to the event feed"]
    assert subscribed[0]["after"] == cursor, "resumed after the stored cursor, not from the start"


def cursor_of(service: Service) -> int:
    with sqlite3.connect(Path(service.env["BOOKMESH_DATA_DIR"]) / "notification.db") as db:
        return db.execute("SELECT position FROM consumer_cursors WHERE subscription = ?", (SUBSCRIPTION,)).fetchone()[0]


def test_watch_notices_streams_a_new_notice(rust, notification):
    member, book = rust.member(), rust.book("Middlemarch")
    own = Credentials(ca=notification.pki / "ca.crt", token=mesh.token("member", member))
    with own.channel(notification.target) as channel:
        stream = stub(channel).WatchNotices(
            pb.WatchNoticesRequest(member_id=member), metadata=own.metadata(), timeout=15
        )
        # Notices written from the moment the stream opened: rent once it is open.
        eventually(lambda: sample(notification.metrics(), "bookmesh_notification_watchers") == 1, message="the watch")
        rust.rent(member, book)
        first = next(iter(stream)).notice
        stream.cancel()
    assert first.kind == pb.NOTICE_KIND_RENTAL_CONFIRMED and first.title == "Middlemarch"


def test_a_bad_member_id_is_invalid_argument_naming_the_field(notification):
    with pytest.raises(grpc.RpcError) as raised:
        list_notices(notification.target, librarian(notification.pki), "not-a-uuid")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == ["member_id"]


def test_unauthenticated_and_forbidden_callers_are_refused(notification):
    member, pki = str(uuid.uuid4()), notification.pki
    ca = pki / "ca.crt"
    assert refusal(notification.target, Credentials(ca=ca), member) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
    )
    other = Credentials(ca=ca, token=mesh.token("member", str(uuid.uuid4())))
    assert refusal(notification.target, other, member) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_SELF")
    own = Credentials(ca=ca, token=mesh.token("member", member))
    assert refusal(notification.target, own, member) == (grpc.StatusCode.OK, None)
    loadgen = Credentials(ca=ca, workload=(pki / "loadgen.crt", pki / "loadgen.key"))
    assert refusal(notification.target, loadgen, member) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    check = Credentials(ca=ca, workload=(pki / "check.crt", pki / "check.key"))
    assert refusal(notification.target, check, member) == (grpc.StatusCode.OK, None)


def test_grpcurl_lists_and_describes_the_service_over_tls(notification):
    grpcurl = shutil.which("grpcurl") or str(ROOT / ".tools" / "venv" / "bin" / "grpcurl")
    if not Path(grpcurl).exists():
        pytest.skip("grpcurl is not installed (make tools)")
    ca = str(notification.pki / "ca.crt")
    listed = subprocess.run(
        [grpcurl, "-cacert", ca, notification.target, "list"], capture_output=True, text=True, timeout=20
    )
    assert listed.returncode == 0, listed.stderr
    assert "bookmesh.notification.v1.NotificationService" in listed.stdout.split()
    described = subprocess.run(
        [grpcurl, "-cacert", ca, notification.target, "describe", "bookmesh.notification.v1.NotificationService"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "rpc WatchNotices" in described.stdout, described.stderr
    token = mesh.token("librarian")
    called = subprocess.run(
        [
            grpcurl,
            "-cacert",
            ca,
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            '{"member_id": "nope"}',
            notification.target,
            "bookmesh.notification.v1.NotificationService/ListNotices",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "InvalidArgument" in called.stderr and "member_id" in called.stderr, called.stderr
