"""Rental events in, exactly once: over the rental service's gRPC event feed (default), or
NATS JetStream (BOOKMESH_EVENT_TRANSPORT=nats), the same contract as the Rust consumers
(src/events/consumer.rs, src/events/nats.rs, docs/events.md):

- each event is applied in one store transaction with its inbox entry and the cursor
  (`Processor.process`): a redelivery changes nothing, a restart resumes after the cursor;
- each event is handled in a CONSUMER span named `<event type> process`, the child of the
  span that produced it (the envelope's `traceparent`), so the rental saga's trace shows it;
- an event whose payload is not what its type says goes to the dead letters (logged at ERROR)
  and the stream goes on; a store that cannot be reached stops the stream, which resumes from
  the cursor once it answers;
- on JetStream, one durable pull consumer named after this service (`notification`), one
  message in flight, acknowledged only after the store committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from datetime import datetime, timezone
from typing import Callable

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bookmesh.events.v1 import events_pb2, events_pb2_grpc

from . import notices, telemetry
from .config import WORKLOAD, Config
from .readiness import Readiness
from .store import AppliedEvent, DeadLetter, NoticeStore, StoreUnavailable
from .watch import NoticeHub

log = logging.getLogger("bookmesh_notification.consumer")

PRODUCER = "rental"
#: `<consumer>:<producer>`, the key of the cursor and the metrics' label.
SUBSCRIPTION = f"{WORKLOAD}:{PRODUCER}"

INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 2.0
#: JetStream redelivers an unacknowledged message after this (src/events/nats.rs ACK_WAIT).
ACK_WAIT = 5.0


class Processor:
    """Applies events to the store, once each, and says so in metrics, logs and spans."""

    def __init__(self, store: NoticeStore, hub: NoticeHub, clock: Callable[[], datetime] = notices.utc_now) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock

    async def process(self, event: events_pb2.Event) -> str:
        """Applies `event`: `applied`, `duplicate` or `dead_lettered`. Raises StoreUnavailable
        when the store cannot record it (the caller must not move past the event)."""
        span = telemetry.tracer().start_span(
            f"{event.event_type} process",
            context=telemetry.parent_context(event.traceparent, event.tracestate),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "bookmesh",
                "messaging.destination.name": event.producer,
                "messaging.consumer.group.name": WORKLOAD,
                "messaging.message.id": event.event_id,
                "event_id": event.event_id,
                "event_type": event.event_type,
            },
        )
        with trace.use_span(span, end_on_exit=True):
            now = self._clock()
            try:
                effects = notices.effects_of(event, now)
                dead_letter = None
            except notices.UndecodableEvent as error:
                effects = notices.Effects()
                dead_letter = DeadLetter(event.SerializeToString(), str(error))
            applied = AppliedEvent(
                subscription=SUBSCRIPTION,
                event_id=event.event_id,
                event_type=event.event_type,
                sequence=event.sequence,
                notices=effects.notices,
                remember=effects.remember,
                forget=effects.forget,
                dead_letter=dead_letter,
            )
            try:
                outcome = await self._store.apply_event(applied, now)
            except StoreUnavailable as error:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "store unavailable"))
                log.warning(
                    "cannot record the event; retrying", extra={"event_id": event.event_id, "error": str(error)}
                )
                raise
            if outcome.duplicate:
                result = "duplicate"
                log.debug("event already applied", extra={"event_id": event.event_id})
            elif dead_letter is not None:
                result = "dead_lettered"
                span.set_status(trace.Status(trace.StatusCode.ERROR, dead_letter.error))
                log.error(
                    "event moved to dead letters",
                    extra={
                        "event_id": event.event_id,
                        "event_type": event.event_type,
                        "subscription": SUBSCRIPTION,
                        "error": dead_letter.error,
                    },
                )
            else:
                result = "applied"
                for notice in outcome.written:
                    log.info(
                        "notice written",
                        extra={
                            "event_id": event.event_id,
                            "event_type": event.event_type,
                            "notice_id": notice.notice_id,
                            "member_id": notice.member_id,
                            "kind": notice.kind.name,
                        },
                    )
        self._record(event, result)
        if outcome.written:
            self._hub.notify(notice.member_id for notice in outcome.written)
        return result

    @staticmethod
    def _record(event: events_pb2.Event, outcome: str) -> None:
        telemetry.CONSUMER_EVENTS.labels(SUBSCRIPTION, outcome).inc()
        telemetry.CONSUMER_POSITION.labels(SUBSCRIPTION).set(event.sequence)
        if event.HasField("occurred_at"):
            occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
            lag = datetime.now(timezone.utc).timestamp() - occurred
            telemetry.CONSUMER_LAG.labels(SUBSCRIPTION).set(max(lag, 0.0))


def _backoff(current: float) -> float:
    """The next wait: doubled, capped, with jitter so replicas do not retry in step."""
    return min(MAX_BACKOFF, current * 2) * random.uniform(0.8, 1.2)


# === the gRPC event feed ===


class FeedChannels:
    """Channels to the rental replicas, as this workload: mTLS with its certificate, checking
    that the server is the `rental` workload (its certificate's name), or plaintext."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def open(self, target: str) -> grpc.aio.Channel:
        options = [
            ("grpc.max_receive_message_length", self._config.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self._config.keepalive_interval * 1000)),
        ]
        if self._config.insecure_plaintext:
            return grpc.aio.insecure_channel(target, options=options)
        # Read at every (re)connection: rotated files are picked up.
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._config.authorities.read_bytes(),
            private_key=self._config.private_key.read_bytes(),
            certificate_chain=self._config.certificate.read_bytes(),
        )
        # Whatever address discovery gave, the server must prove it is rental: the CA issues
        # the name `rental` to that workload only.
        options.append(("grpc.ssl_target_name_override", PRODUCER))
        return grpc.aio.secure_channel(target, credentials, options=options)


async def run_feed(processor: Processor, store: NoticeStore, config: Config, readiness: Readiness) -> None:
    """Subscribes to rental's feed after the stored cursor and applies events until the
    service stops; resubscribes (to the next endpoint) with backoff when the stream breaks."""
    await readiness.wait_started()
    channels = FeedChannels(config)
    endpoints = config.rental_endpoints
    attempt, backoff = 0, INITIAL_BACKOFF
    while not readiness.stopping.is_set():
        target = endpoints[attempt % len(endpoints)]
        try:
            after = await store.cursor(SUBSCRIPTION)
            channel = channels.open(target)
        except (StoreUnavailable, OSError) as error:
            log.warning("cannot subscribe yet", extra={"subscription": SUBSCRIPTION, "error": str(error)})
        else:
            try:
                call = events_pb2_grpc.EventFeedServiceStub(channel).Subscribe(
                    events_pb2.SubscribeRequest(after_sequence=after)
                )
                await call.initial_metadata()  # the producer took the subscription, or refused it
                if not call.done():
                    log.info(
                        "subscribed to the event feed",
                        extra={"subscription": SUBSCRIPTION, "after": after, "endpoint": target},
                    )
                async for response in call:
                    if not response.HasField("event"):
                        continue
                    await processor.process(response.event)
                    backoff = INITIAL_BACKOFF
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                    # Behind the producer's retention: events were lost to this consumer.
                    log.error(
                        "the feed no longer has the events after our cursor",
                        extra={"after": after, "error": error.details()},
                    )
                elif error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    # A producer starting, stopping or restarting: routine.
                    log.debug(
                        "event stream ended; resubscribing", extra={"code": error.code().name, "error": error.details()}
                    )
                else:
                    # Refused (the policy, the certificate) or throttled: an operator should know.
                    log.warning(
                        "subscription refused; retrying",
                        extra={"endpoint": target, "code": error.code().name, "error": error.details()},
                    )
                attempt += 1
            except StoreUnavailable:
                pass  # logged by the processor; resume from the cursor once the store answers
            except Exception:  # noqa: BLE001 - a bug must not end consumption silently
                log.exception("event handling failed; resubscribing", extra={"subscription": SUBSCRIPTION})
            finally:
                await channel.close(grace=None)
        if await readiness.sleep(backoff):
            return
        backoff = _backoff(backoff)


# === NATS JetStream ===


def nats_stream(prefix: str, producer: str = PRODUCER) -> str:
    """`<PREFIX>_<PRODUCER>`, the producer's stream (src/events/nats.rs)."""
    return f"{prefix.upper()}_{producer.upper()}"


def nats_subject(prefix: str, producer: str = PRODUCER) -> str:
    """`<prefix>.<producer>.events`."""
    return f"{prefix.lower()}.{producer}.events"


def nats_durable(replica: str | None) -> str:
    """The service's shared durable consumer, or this replica's own."""
    if not replica:
        return WORKLOAD
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in replica)
    return f"{WORKLOAD}-{cleaned}"


async def _connect_nats(config: Config, readiness: Readiness):
    import nats
    from urllib.parse import unquote, urlsplit

    url = urlsplit(config.nats_url)
    options: dict = {"servers": [config.nats_url], "name": WORKLOAD, "max_reconnect_attempts": -1}
    if url.username:
        # Replies come back on an inbox only this user may read (the broker's permissions).
        options["inbox_prefix"] = f"_INBOX_{unquote(url.username)}".encode()
    if config.nats_ca is not None:
        context = ssl.create_default_context(cafile=str(config.nats_ca))
        options["tls"] = context
    backoff = 0.1
    while not readiness.stopping.is_set():
        try:
            return await nats.connect(**options)
        except Exception as error:  # noqa: BLE001 - any failure to connect is retried
            log.warning("cannot reach NATS", extra={"error": str(error), "retry_in": round(backoff, 2)})
        if await readiness.sleep(backoff):
            break
        backoff = min(backoff * 2, 5.0)
    return None


async def run_nats(processor: Processor, config: Config, readiness: Readiness) -> None:
    """Pulls rental's events through this service's durable consumer until the service stops."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig
    from nats.js.errors import NotFoundError

    await readiness.wait_started()
    client = await _connect_nats(config, readiness)
    if client is None:
        return
    js = client.jetstream()
    stream, subject = nats_stream(config.nats_prefix), nats_subject(config.nats_prefix)
    durable = nats_durable(config.nats_replica_consumer)
    consumer = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_ack_pending=1,
        inactive_threshold=15 * 60 if config.nats_replica_consumer else None,
    )
    backoff = 0.1
    try:
        while not readiness.stopping.is_set():
            try:
                # The producer creates its stream; a consumer may only read it, so it waits.
                subscription = await js.pull_subscribe(subject, durable=durable, stream=stream, config=consumer)
            except (NotFoundError, NatsTimeout, Exception) as error:  # noqa: BLE001
                log.warning(
                    "cannot consume from JetStream",
                    extra={"stream": stream, "error": str(error) or type(error).__name__},
                )
                if await readiness.sleep(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            log.info("consuming from JetStream", extra={"stream": stream, "durable": durable})
            backoff = 0.1
            while not readiness.stopping.is_set():
                try:
                    messages = await subscription.fetch(1, timeout=1)
                except NatsTimeout:
                    continue
                except Exception as error:  # noqa: BLE001 - resubscribe
                    log.warning("JetStream delivery failed; resubscribing", extra={"error": str(error)})
                    break
                for message in messages:
                    await _handle(processor, message)
            await subscription.unsubscribe()
    finally:
        await client.drain()


async def _handle(processor: Processor, message) -> None:
    """Applies one JetStream message; acknowledges it only once its effect committed."""
    try:
        event = events_pb2.Event.FromString(message.data)
    except DecodeError as error:
        # Not an envelope: nothing any retry could fix. Logged and acknowledged.
        log.error("undecodable message on the event stream; dropped", extra={"error": str(error)})
        await message.ack()
        return
    if event.producer != PRODUCER:
        # Only the producer may publish on its subject; an envelope naming another is refused.
        log.error(
            "an envelope on this stream claims another producer; refused",
            extra={"claimed": event.producer, "event_id": event.event_id},
        )
        telemetry.CONSUMER_EVENTS.labels(SUBSCRIPTION, "refused").inc()
        await message.ack()
        return
    work = asyncio.ensure_future(processor.process(event))
    while True:
        # "In progress" acks keep JetStream from redelivering a slow step meanwhile.
        done, _ = await asyncio.wait({work}, timeout=ACK_WAIT / 2)
        if done:
            break
        try:
            await message.in_progress()
        except Exception:  # noqa: BLE001 - the redelivery is harmless (the inbox)
            pass
    try:
        work.result()
    except StoreUnavailable:
        await message.nak(delay=1)
        return
    await message.ack()
