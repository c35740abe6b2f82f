"""A stand-in for the rental service's event feed (bookmesh.events.v1.EventFeedService): the
events it is given, after the subscriber's `after_sequence`, then a live tail. Served
plaintext, or over mTLS as the `rental` workload requiring the client's certificate (so a test
sees the notification service present its own)."""

from __future__ import annotations

import threading
import uuid
from concurrent import futures
from datetime import datetime, timezone
from pathlib import Path

import grpc
from google.protobuf import any_pb2, timestamp_pb2

from bookmesh.events.v1 import events_pb2, events_pb2_grpc
from bookmesh.rental.v1 import events_pb2 as rental_events


def envelope(payload, sequence: int, *, event_id: str | None = None, traceparent: str = "", producer: str = "rental"):
    packed = any_pb2.Any()
    packed.Pack(payload)
    occurred = timestamp_pb2.Timestamp()
    occurred.FromDatetime(datetime.now(timezone.utc))
    return events_pb2.Event(
        event_id=event_id or str(uuid.uuid4()),
        event_type=payload.DESCRIPTOR.full_name,
        producer=producer,
        aggregate_id=getattr(payload, "member_id", ""),
        occurred_at=occurred,
        sequence=sequence,
        traceparent=traceparent,
        payload=packed,
    )


def rent_confirmed(
    member_id: str, title: str = "Dune", due_at: datetime | None = None, **ids
) -> rental_events.RentConfirmed:
    due = timestamp_pb2.Timestamp()
    due.FromDatetime(due_at or datetime(2026, 12, 15, 10, 0, tzinfo=timezone.utc))
    return rental_events.RentConfirmed(
        member_id=member_id,
        book_id=ids.get("book_id", str(uuid.uuid4())),
        item_id=ids.get("item_id", str(uuid.uuid4())),
        title=title,
        due_at=due,
    )


class FakeFeed(events_pb2_grpc.EventFeedServiceServicer):
    def __init__(self) -> None:
        self.events: list[events_pb2.Event] = []
        self.subscriptions: list[tuple[int, dict]] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._server: grpc.Server | None = None
        self.port = 0

    def publish(self, *events: events_pb2.Event) -> None:
        with self._changed:
            self.events.extend(events)
            self._changed.notify_all()

    def Subscribe(self, request, context):
        peer = dict(
            (key, [v.decode() if isinstance(v, bytes) else v for v in values])
            for key, values in (context.auth_context() or {}).items()
        )
        self.subscriptions.append((request.after_sequence, peer))
        sent = request.after_sequence
        while context.is_active():
            with self._changed:
                pending = [event for event in self.events if event.sequence > sent]
                if not pending and not self._stopping:
                    self._changed.wait(timeout=0.2)
                    continue
            if self._stopping:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the producer is stopping")
            for event in sorted(pending, key=lambda e: e.sequence):
                yield events_pb2.SubscribeResponse(event=event)
                sent = max(sent, event.sequence)

    def start(self, pki: Path | None = None) -> "FakeFeed":
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        events_pb2_grpc.add_EventFeedServiceServicer_to_server(self, self._server)
        if pki is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials(
                [((pki / "rental.key").read_bytes(), (pki / "rental.crt").read_bytes())],
                root_certificates=(pki / "ca.crt").read_bytes(),
                require_client_auth=True,
            )
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.stop(grace=1).wait()
