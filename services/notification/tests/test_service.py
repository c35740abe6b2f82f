"""The service as a real process, in front of a stand-in for rental's event feed: mTLS with a
PKI like the launcher's, health and drain, reflection, validation, authorization, watching,
exactly-once consumption across restarts, reminders, metrics and logs."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh.rental.v1 import events_pb2 as rental_events
from support.calls import list_notices, reason, refusal, stub, violated_fields
from support.feed import FakeFeed, envelope, rent_confirmed
from support.pki import issue, make_authority, make_pki
from support.service import Credentials, Service, eventually, sample
from support.tokens import token

SERVICE = "bookmesh.notification.v1.NotificationService"
WORKLOADS = ["notification", "rental", "check", "loadgen", "gateway"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), WORKLOADS)


@pytest.fixture()
def feed(pki):
    feed = FakeFeed().start(pki)
    yield feed
    feed.stop()


def librarian(pki: Path) -> Credentials:
    return Credentials(ca=pki / "ca.crt", token=token(pki, "librarian"))


def workload(pki: Path, name: str) -> Credentials:
    return Credentials(ca=pki / "ca.crt", workload=(pki / f"{name}.crt", pki / f"{name}.key"))


def start(tmp_path: Path, pki: Path, feed: FakeFeed, **env: str) -> Service:
    settings = {
        "BOOKMESH_PKI_DIR": str(pki),
        "BOOKMESH_RENTAL_ENDPOINTS": f"http://127.0.0.1:{feed.port}",
        "BOOKMESH_REMINDER_INTERVAL": "100ms",
        "BOOKMESH_SHUTDOWN_GRACE": "5s",
        **env,
    }
    return Service(settings, tmp_path).start()


@pytest.fixture()
def service(tmp_path, pki, feed):
    running = start(tmp_path, pki, feed).wait_serving(librarian(pki))
    yield running
    assert running.stop() == 0, running.text()[-3000:]


def notices_of(service: Service, pki: Path, member_id: str, **fields) -> list[pb.Notice]:
    return list(list_notices(service.target, librarian(pki), member_id, **fields).notices)


def test_a_confirmed_rental_becomes_one_notice_even_delivered_twice(service, pki, feed):
    member = str(uuid.uuid4())
    event = envelope(rent_confirmed(member, "Dune"), 1)
    feed.publish(event)
    [notice] = eventually(lambda: notices_of(service, pki, member), message="the notice")
    assert notice.kind == pb.NOTICE_KIND_RENTAL_CONFIRMED
    assert notice.text == "You have “Dune” until 15 December 2026."
    assert notice.event_id == event.event_id and notice.member_id == member
    # Delivered again at another position (as a redelivery would be): nothing new.
    again = envelope(rent_confirmed(member, "Dune"), 2, event_id=event.event_id)
    feed.publish(again, envelope(rent_confirmed(str(uuid.uuid4())), 3))
    eventually(lambda: sample(service.metrics(), "bookmesh_consumer_position", subscription="notification:rental") == 3)
    assert [n.notice_id for n in notices_of(service, pki, member)] == [notice.notice_id]
    metrics = service.metrics()
    assert sample(metrics, "bookmesh_consumer_events_total", subscription="notification:rental", outcome="applied") == 2
    assert (
        sample(metrics, "bookmesh_consumer_events_total", subscription="notification:rental", outcome="duplicate") == 1
    )
    # The feed saw this workload's own certificate.
    assert any("notification" in peer.get("x509_common_name", []) for _, peer in feed.subscriptions)


def test_a_restart_resumes_after_the_cursor_and_a_reset_cursor_replays_without_effect(tmp_path, pki, feed):
    member = str(uuid.uuid4())
    feed.publish(*(envelope(rent_confirmed(member, f"Book {n}"), n) for n in range(1, 4)))
    first = start(tmp_path, pki, feed).wait_serving(librarian(pki))
    eventually(lambda: len(notices_of(first, pki, member)) == 3)
    assert first.stop() == 0
    # While it is down, more happens.
    feed.publish(envelope(rent_confirmed(member, "Book 4"), 4))
    feed.subscriptions.clear()
    second = start(tmp_path, pki, feed).wait_serving(librarian(pki))
    try:
        eventually(lambda: len(notices_of(second, pki, member)) == 4, message="the notice written while down")
        assert feed.subscriptions[0][0] == 3, "resumed after the stored cursor"
    finally:
        assert second.stop() == 0
    before = [n.notice_id for n in notices_of_stopped(tmp_path, pki, feed, member)]

    # The cursor back to 0, the inbox kept: every event is delivered again and changes nothing.
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "notification.db") as db:
        db.execute("UPDATE consumer_cursors SET position = 0")
    feed.subscriptions.clear()
    third = start(tmp_path, pki, feed).wait_serving(librarian(pki))
    try:
        eventually(
            lambda: (
                sample(
                    third.metrics(),
                    "bookmesh_consumer_events_total",
                    subscription="notification:rental",
                    outcome="duplicate",
                )
                == 4
            ),
            message="four duplicates",
        )
        assert feed.subscriptions[0][0] == 0
        assert [n.notice_id for n in notices_of(third, pki, member)] == before
    finally:
        assert third.stop() == 0


def notices_of_stopped(tmp_path, pki, feed, member) -> list[pb.Notice]:
    """The notices as a fresh process of the same data reads them."""
    probe = start(tmp_path, pki, feed).wait_serving(librarian(pki))
    try:
        return notices_of(probe, pki, member)
    finally:
        probe.stop()


@pytest.mark.redis
def test_the_redis_store_serves_the_same_notices(tmp_path, pki, feed):
    from bookmesh_notification.store.redis import RedisStore

    prefix = f"bookmesh-test:notification:{uuid.uuid4()}:"
    running = start(
        tmp_path, pki, feed, BOOKMESH_NOTIFICATION_STORE="redis", BOOKMESH_REDIS_PREFIX=prefix
    ).wait_serving(librarian(pki))
    try:
        member = str(uuid.uuid4())
        event = envelope(rent_confirmed(member, "Dune"), 1)
        feed.publish(event, envelope(rent_confirmed(member, "Dune"), 2, event_id=event.event_id))
        [notice] = eventually(lambda: notices_of(running, pki, member), message="the notice")
        assert notice.event_id == event.event_id
        eventually(
            lambda: sample(running.metrics(), "bookmesh_consumer_position", subscription="notification:rental") == 2
        )
        assert len(notices_of(running, pki, member)) == 1
    finally:
        assert running.stop() == 0

        async def drop() -> None:
            store = RedisStore("redis://127.0.0.1:6379/0", prefix)
            await store.open()
            assert await store.drop_all() > 0
            await store.close()

        import asyncio

        asyncio.run(drop())


def test_every_rental_event_tells_the_member(service, pki, feed):
    member, item = str(uuid.uuid4()), str(uuid.uuid4())
    overdue = rental_events.ItemOverdue(member_id=member, book_id="b", item_id=item, title="Emma")
    overdue.due_at.FromDatetime(datetime(2026, 11, 30, tzinfo=timezone.utc))
    feed.publish(
        envelope(rent_confirmed(member, "Emma", item_id=item), 1),
        envelope(rental_events.ItemRented(member_id=member, item_id=item), 2),
        envelope(overdue, 3),
        envelope(rental_events.ItemReturned(member_id=member, item_id=item, late_fee=10, title="Emma"), 4),
        envelope(rental_events.OverdueCleared(member_id=member, points=10), 5),
        envelope(
            rental_events.RentCanceled(member_id=member, item_id="x", title="Ulysses", reason="already reserved"), 6
        ),
    )
    notices = eventually(lambda: len(n := notices_of(service, pki, member)) == 5 and n)
    assert [n.kind for n in notices] == [
        pb.NOTICE_KIND_RENTAL_CANCELED,
        pb.NOTICE_KIND_OVERDUE_CLEARED,
        pb.NOTICE_KIND_BOOK_RETURNED,
        pb.NOTICE_KIND_CARD_SUSPENDED,
        pb.NOTICE_KIND_RENTAL_CONFIRMED,
    ], "newest first"
    assert notices[0].reason == "already reserved" and notices[2].points == 10


def test_pages_follow_their_tokens(service, pki, feed):
    member = str(uuid.uuid4())
    feed.publish(*(envelope(rent_confirmed(member, f"Book {n}"), n) for n in range(1, 6)))
    eventually(lambda: len(notices_of(service, pki, member)) == 5)
    first = list_notices(service.target, librarian(pki), member, page_size=2)
    second = list_notices(service.target, librarian(pki), member, page_size=2, page_token=first.next_page_token)
    third = list_notices(service.target, librarian(pki), member, page_size=2, page_token=second.next_page_token)
    titles = [n.title for page in (first, second, third) for n in page.notices]
    assert titles == ["Book 5", "Book 4", "Book 3", "Book 2", "Book 1"]
    assert third.next_page_token == ""
    assert list(list_notices(service.target, librarian(pki), str(uuid.uuid4())).notices) == []


def test_bad_input_is_invalid_argument_naming_every_field(service, pki):
    with pytest.raises(grpc.RpcError) as raised:
        list_notices(service.target, librarian(pki), "not-a-uuid", page_size=101, page_token="junk")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == ["member_id", "page_size", "page_token"]
    with credentials_channel(service, librarian(pki)) as channel, pytest.raises(grpc.RpcError) as raised:
        next(
            iter(
                stub(channel).WatchNotices(
                    pb.WatchNoticesRequest(member_id="x"), metadata=librarian(pki).metadata(), timeout=5
                )
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == ["member_id"]


def credentials_channel(service: Service, credentials: Credentials) -> grpc.Channel:
    return credentials.channel(service.target)


def test_only_the_member_themself_staff_and_named_workloads_read_notices(service, pki, tmp_path):
    member = str(uuid.uuid4())
    ca = pki / "ca.crt"
    allowed = [
        librarian(pki),
        Credentials(ca=ca, token=token(pki, "admin")),
        Credentials(ca=ca, token=token(pki, "member", member)),
        workload(pki, "check"),
    ]
    for credentials in allowed:
        assert refusal(service.target, credentials, member) == (grpc.StatusCode.OK, None)
    refused = [
        (Credentials(ca=ca), grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING"),
        (
            Credentials(ca=ca, token=token(pki, "member", str(uuid.uuid4()))),
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_SELF",
        ),
        (workload(pki, "loadgen"), grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED"),
        (
            Credentials(ca=ca, token=token(pki, "librarian", lifetime=-120)),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_EXPIRED",
        ),
        (
            Credentials(ca=ca, token=token(pki, "librarian", issuer="another")),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_ISSUER_INVALID",
        ),
        (Credentials(ca=ca, token="garbage"), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
    ]
    for credentials, code, why in refused:
        assert refusal(service.target, credentials, member) == (code, why)
    # A made-up method of this service: no rule names it.
    with librarian(pki).channel(service.target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/{SERVICE}/Made-up")(b"", metadata=librarian(pki).metadata(), timeout=5)
    assert (raised.value.code(), reason(raised.value)) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RULE")
    metrics = service.metrics()
    assert sample(metrics, "bookmesh_authz_refusals_total", rpc_method=f"{SERVICE}/ListNotices", reason="NOT_SELF") == 1
    assert sample(metrics, "bookmesh_authz_refusals_total", rpc_method="unknown", reason="NO_RULE") == 1
    assert sample(metrics, "rpc_server_requests_total", rpc_method="unknown", rpc_grpc_status_code="7") == 1
    assert 'rpc_method="Made-up"' not in metrics, "made-up names create no series"
    # Each refusal is logged once, naming the caller.
    lines = [line for line in service.json_lines() if line.get("message") == "call refused"]
    assert {line["reason"] for line in lines} >= {"CREDENTIALS_MISSING", "NOT_SELF", "POLICY_DENIED", "NO_RULE"}
    assert any(line["workload"] == "loadgen" for line in lines)


def test_plaintext_and_foreign_certificates_are_refused_but_health_and_reflection_are_open(service, pki, tmp_path):
    with grpc.insecure_channel(service.target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            stub(channel).ListNotices(pb.ListNoticesRequest(member_id=str(uuid.uuid4())), timeout=2)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, "no plaintext on a TLS port"
    foreign = tmp_path / "foreign"
    make_authority(foreign)
    issue(foreign, "check")
    intruder = Credentials(ca=pki / "ca.crt", workload=(foreign / "check.crt", foreign / "check.key"))
    assert refusal(service.target, intruder, str(uuid.uuid4()))[0] == grpc.StatusCode.UNAVAILABLE, "handshake refused"
    anonymous = Credentials(ca=pki / "ca.crt")
    assert service.health(anonymous) == health_pb2.HealthCheckResponse.SERVING
    assert service.health(anonymous, "liveness") == health_pb2.HealthCheckResponse.SERVING
    assert sorted(list_services(service, anonymous)) == [
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert sorted(list_services(service, anonymous, "grpc.reflection.v1.ServerReflection")) == sorted(
        list_services(service, anonymous)
    )
    for symbol in (SERVICE, "google.rpc.BadRequest", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"):
        response = reflect(service, anonymous, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        assert response.HasField("file_descriptor_response"), symbol


def reflect(
    service: Service, credentials: Credentials, request, name: str = "grpc.reflection.v1alpha.ServerReflection"
):
    with credentials.channel(service.target) as channel:
        call = channel.stream_stream(
            f"/{name}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return next(iter(call(iter([request]), timeout=5)))


def list_services(service: Service, credentials: Credentials, name: str = "grpc.reflection.v1alpha.ServerReflection"):
    response = reflect(service, credentials, reflection_pb2.ServerReflectionRequest(list_services=""), name)
    return [s.name for s in response.list_services_response.service]


def test_watch_streams_new_notices_and_ends_ok_at_the_callers_deadline(service, pki, feed):
    member = str(uuid.uuid4())
    feed.publish(envelope(rent_confirmed(member, "Old"), 1))
    eventually(lambda: notices_of(service, pki, member))
    own = Credentials(ca=pki / "ca.crt", token=token(pki, "member", member))
    received: list[pb.Notice] = []
    with own.channel(service.target) as channel:
        started = time.monotonic()
        stream = stub(channel).WatchNotices(
            pb.WatchNoticesRequest(member_id=member), metadata=own.metadata(), timeout=3
        )
        eventually(lambda: sample(service.metrics(), "bookmesh_notification_watchers") == 1, message="the watch")
        feed.publish(envelope(rent_confirmed(member, "New"), 2))
        for response in stream:  # ends with OK just before the deadline
            received.append(response.notice)
        assert stream.code() == grpc.StatusCode.OK
        assert 2.5 < time.monotonic() - started < 3.5
    assert [n.title for n in received] == ["New"], "only what was written after the stream opened"
    metrics = service.metrics()
    assert (
        sample(
            metrics,
            "rpc_server_requests_total",
            rpc_service=SERVICE,
            rpc_method="WatchNotices",
            rpc_grpc_status_code="0",
        )
        == 1
    )


def test_watchers_are_bounded_and_end_on_drain(tmp_path, pki, feed):
    running = start(tmp_path, pki, feed, BOOKMESH_MAX_NOTICE_WATCHERS="1").wait_serving(librarian(pki))
    member = str(uuid.uuid4())
    credentials = librarian(pki)
    with credentials.channel(running.target) as channel:
        first = stub(channel).WatchNotices(
            pb.WatchNoticesRequest(member_id=member), metadata=credentials.metadata(), timeout=30
        )
        eventually(lambda: sample(running.metrics(), "bookmesh_notification_watchers") == 1)
        with pytest.raises(grpc.RpcError) as raised:
            next(
                iter(
                    stub(channel).WatchNotices(
                        pb.WatchNoticesRequest(member_id=member), metadata=credentials.metadata(), timeout=5
                    )
                )
            )
        assert (raised.value.code(), reason(raised.value)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "NOTICE_WATCHERS_EXHAUSTED",
        )
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
        assert next(health).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            next(iter(first))
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, "the watcher is told to go elsewhere"
        statuses = []
        with pytest.raises(grpc.RpcError) as health_ended:
            for update in health:
                statuses.append(update.status)
        assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert health_ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert running.process.wait(10) == 0
        assert time.monotonic() - started < 5, "the drain does not wait for open streams"


def test_until_the_store_answers_health_is_not_serving_and_calls_unavailable(tmp_path, pki, feed):
    running = start(
        tmp_path, pki, feed, BOOKMESH_NOTIFICATION_STORE="redis", BOOKMESH_REDIS_URL="redis://127.0.0.1:1/0"
    )
    try:
        anonymous = Credentials(ca=pki / "ca.crt")
        eventually(lambda: running.health(anonymous, "liveness") == health_pb2.HealthCheckResponse.SERVING)
        assert running.health(anonymous) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert running.health(anonymous, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        code, _ = refusal(running.target, librarian(pki), str(uuid.uuid4()))
        assert code == grpc.StatusCode.UNAVAILABLE
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{running.admin_port}/readyz", timeout=2)
        assert not_ready.value.code == 503
        with urllib.request.urlopen(f"http://127.0.0.1:{running.admin_port}/healthz", timeout=2) as alive:
            assert alive.status == 200
    finally:
        assert running.stop() == 0


def test_a_due_date_within_two_days_is_reminded_once(service, pki, feed):
    member = str(uuid.uuid4())
    soon = datetime.now(timezone.utc) + timedelta(days=1)
    returned = str(uuid.uuid4())
    feed.publish(
        envelope(rent_confirmed(member, "Soon", soon), 1),
        envelope(rent_confirmed(member, "Later", soon + timedelta(days=10)), 2),
        envelope(rent_confirmed(member, "Returned", soon, item_id=returned), 3),
        envelope(rental_events.ItemReturned(member_id=member, item_id=returned, title="Returned"), 4),
    )
    reminders = lambda: [n for n in notices_of(service, pki, member) if n.kind == pb.NOTICE_KIND_DUE_SOON]  # noqa: E731
    [reminder] = eventually(reminders, message="the reminder")
    assert reminder.title == "Soon" and reminder.event_id == ""
    time.sleep(0.5)  # five more rounds of the reminder task (100 ms)
    assert len(reminders()) == 1


def test_an_undecodable_event_is_dead_lettered_and_the_stream_goes_on(service, pki, feed):
    member = str(uuid.uuid4())
    poison = envelope(rent_confirmed(member, "Poison"), 1)
    poison.payload.value = b"\xff\xff"
    feed.publish(poison, envelope(rent_confirmed(member, "Fine"), 2))
    [notice] = eventually(lambda: notices_of(service, pki, member))
    assert notice.title == "Fine"
    metrics = service.metrics()
    assert sample(metrics, "bookmesh_consumer_events_total", outcome="dead_lettered") == 1
    [line] = [line for line in service.json_lines() if line.get("message") == "event moved to dead letters"]
    assert line["level"] == "ERROR" and line["event_id"] == poison.event_id


def test_calls_and_events_carry_their_trace_into_the_logs_and_metrics(service, pki, feed):
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    member = str(uuid.uuid4())
    event = envelope(rent_confirmed(member), 1, traceparent=f"00-{trace_id}-{parent}-01")
    feed.publish(event)
    eventually(lambda: notices_of(service, pki, member))
    [written] = [line for line in service.json_lines() if line.get("message") == "notice written"]
    assert written["trace_id"] == trace_id and written["span_id"] != parent
    assert written["event_id"] == event.event_id
    # A refused call's log line carries the caller's trace.
    call_trace = uuid.uuid4().hex
    with Credentials(ca=pki / "ca.crt").channel(service.target) as channel:
        with pytest.raises(grpc.RpcError):
            stub(channel).ListNotices(
                pb.ListNoticesRequest(member_id=member),
                metadata=(("traceparent", f"00-{call_trace}-{uuid.uuid4().hex[:16]}-01"),),
                timeout=5,
            )
    assert any(
        line.get("trace_id") == call_trace for line in service.json_lines() if line.get("message") == "call refused"
    )
    metrics = service.metrics()
    assert (
        sample(
            metrics,
            "rpc_server_requests_total",
            rpc_service=SERVICE,
            rpc_method="ListNotices",
            rpc_grpc_status_code="0",
        )
        >= 1
    )
    assert (
        sample(
            metrics,
            "rpc_server_requests_total",
            rpc_service=SERVICE,
            rpc_method="ListNotices",
            rpc_grpc_status_code="16",
        )
        == 1
    )
    assert (
        sample(metrics, "rpc_server_duration_seconds_bucket", rpc_service=SERVICE, rpc_method="ListNotices", le="0.001")
        is not None
    )
    assert sample(metrics, "rpc_server_active_requests", rpc_service=SERVICE) == 0
    assert sample(metrics, "bookmesh_consumer_lag_seconds", subscription="notification:rental") is not None
    assert "_created" not in metrics


class _Receiver:
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        from concurrent import futures

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver.requests.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.requests: list = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self) -> list[tuple[str, object]]:
        found = []
        for request in self.requests:
            for resource in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), None
                )
                for scope in resource.scope_spans:
                    found.extend((service, span) for span in scope.spans)
        return found


def test_spans_continue_the_callers_and_the_events_trace(tmp_path, pki, feed):
    from opentelemetry.proto.trace.v1 import trace_pb2

    receiver = _Receiver()
    running = start(
        tmp_path,
        pki,
        feed,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    ).wait_serving(librarian(pki))
    try:
        trace_id, producer_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        member = str(uuid.uuid4())
        feed.publish(envelope(rent_confirmed(member), 1, traceparent=f"00-{trace_id}-{producer_span}-01"))
        eventually(lambda: notices_of(running, pki, member))
        call_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        credentials = librarian(pki)
        with credentials.channel(running.target) as channel:
            stub(channel).ListNotices(
                pb.ListNoticesRequest(member_id=member),
                metadata=credentials.metadata() + (("traceparent", f"00-{call_trace}-{caller_span}-01"),),
                timeout=5,
            )

        def exported(name: str):
            return [span for service, span in receiver.spans() if span.name == name and service == "notification"]

        [consumed] = eventually(
            lambda: exported("bookmesh.rental.v1.RentConfirmed process"), message="the consumer span"
        )
        assert consumed.kind == trace_pb2.Span.SPAN_KIND_CONSUMER
        assert (consumed.trace_id.hex(), consumed.parent_span_id.hex()) == (trace_id, producer_span)
        attributes = {a.key: a.value.string_value for a in consumed.attributes}
        assert attributes["messaging.system"] == "bookmesh"
        assert attributes["messaging.consumer.group.name"] == "notification"
        assert attributes["messaging.destination.name"] == "rental"
        served = eventually(
            lambda: [s for s in exported(f"{SERVICE}/ListNotices") if s.trace_id.hex() == call_trace],
            message="the server span",
        )
        assert served[0].kind == trace_pb2.Span.SPAN_KIND_SERVER
        assert served[0].parent_span_id.hex() == caller_span
        codes = {a.key: a.value.int_value for a in served[0].attributes}
        assert codes["rpc.grpc.status_code"] == 0
    finally:
        assert running.stop() == 0
        receiver.server.stop(None)


def test_the_development_mode_is_plaintext_without_authorization(tmp_path):
    feed = FakeFeed().start()  # plaintext, as rental is with --insecure-plaintext
    running = Service(
        {
            "BOOKMESH_INSECURE_PLAINTEXT": "true",
            "BOOKMESH_RENTAL_ENDPOINTS": f"http://127.0.0.1:{feed.port}",
            "BOOKMESH_PKI_DIR": str(tmp_path / "no-pki"),
        },
        tmp_path,
    ).start()
    try:
        anyone = Credentials()
        running.wait_serving(anyone)
        member = str(uuid.uuid4())
        feed.publish(envelope(rent_confirmed(member, "Dune"), 1))
        [notice] = eventually(lambda: list(list_notices(running.target, anyone, member).notices))
        assert notice.title == "Dune"
        assert any(line.get("message", "").startswith("INSECURE") for line in running.json_lines())
    finally:
        assert running.stop() == 0
        feed.stop()


def test_what_an_operator_must_fix_stops_the_start_with_one_line(tmp_path, pki, feed):
    missing = tmp_path / "empty-pki"
    missing.mkdir()
    bad_policy = tmp_path / "policy.toml"
    bad_policy.write_text('[[rule]]\nmethods = ["bookmesh.notification.v1.NotificationService/Typo"]\nanyone = true\n')
    cases = [
        ({"BOOKMESH_PKI_DIR": str(missing)}, "token keys"),
        ({"BOOKMESH_TOKEN_KEYS": str(pki / "jwt.pub"), "BOOKMESH_PKI_DIR": str(missing)}, "cannot load credentials"),
        ({"BOOKMESH_AUTHZ_POLICY": str(bad_policy)}, "names no known RPC"),
        ({"BOOKMESH_MAX_MESSAGE_BYTES": "lots"}, "BOOKMESH_MAX_MESSAGE_BYTES"),
    ]
    for index, (env, message) in enumerate(cases):
        workdir = tmp_path / f"case{index}"
        workdir.mkdir()
        settings = {"BOOKMESH_PKI_DIR": str(pki), "BOOKMESH_RENTAL_ENDPOINTS": f"http://127.0.0.1:{feed.port}", **env}
        failed = Service(settings, workdir).start()
        assert failed.process.wait(20) in (1, 2), failed.text()
        assert message in failed.text(), failed.text()
