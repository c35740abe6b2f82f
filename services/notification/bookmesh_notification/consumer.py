"""Rental events in, exactly once: over the rental service's gRPC event feed (default), or
NATS JetStream (BOOKMESH_EVENT_TRANSPORT=nats), the same contract as the Rust consumers
(src/events/consumer.rs, src/events/nats.rs, docs/events.md):

- each event is applied in one store transaction with its inbox entry and the cursor
  (`Processor.process`): a redelivery changes nothing, a restart resumes after the cursor;
- each event is handled in a CONSUMER span named `<event type> process`, the child of the
  span that produced it (the envelope's `traceparent`), so the rental saga's trace shows it;
- an event whose payload is not what its type says goes to the dead letters (logged at ERROR)
  and the stream goes on; a store that cannot be reached, or answers with an error, stops the
  stream, which resumes from the cursor (with backoff) once it answers, as long as it takes;
- an event whose handling fails otherwise (a bug, the unforeseen) is delivered again with
  backoff, and after MAX_ATTEMPTS failures goes to the dead letters: one event must not block
  everything behind it forever, nor end consumption;
- on JetStream, one durable pull consumer named after this service (`notification`), one
  message in flight, acknowledged only after the store committed, negatively acknowledged with
  a growing delay when it could not be.
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
from .store import AppliedEvent, DeadLetter, NoticeStore, StoreError, StoreUnavailable
from .watch import NoticeHub

log = logging.getLogger("bookmesh_notification.consumer")

PRODUCER = "rental"
#: `<consumer>:<producer>`, the key of the cursor and the metrics' label.
SUBSCRIPTION = f"{WORKLOAD}:{PRODUCER}"

INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 2.0
#: JetStream redelivers an unacknowledged message after this (src/events/nats.rs ACK_WAIT).
ACK_WAIT = 5.0
#: Failed attempts at one event (the store's failures not counted) before it is dead-lettered.
MAX_ATTEMPTS = 5


class RetryLater(Exception):
    """The event was not recorded, and why is logged: deliver it again, after a backoff."""


class Processor:
    """Applies events to the store, once each, and says so in metrics, logs and spans."""

    def __init__(self, store: NoticeStore, hub: NoticeHub, clock: Callable[[], datetime] = notices.utc_now) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        # The event that failed last: its id, failures, the last error. One event is in flight
        # at a time on either transport, so one entry is enough (and bounded).
        self._failing: tuple[str, int, str] | None = None

    async def process(self, event: events_pb2.Event) -> str:
        """Applies `event`: `applied`, `duplicate` or `dead_lettered`. Raises RetryLater when
        it was not recorded (the caller must not move past it, and delivers it again later):
        the store failed (as often as it does), or handling it failed fewer than MAX_ATTEMPTS
        times. At the last failed attempt, it goes to the dead letters instead."""
        failures, last_error = 0, ""
        if self._failing is not None and self._failing[0] == event.event_id:
            _, failures, last_error = self._failing
        while True:
            dead_letter = None
            if failures >= MAX_ATTEMPTS:
                dead_letter = DeadLetter(event.SerializeToString(), f"handling failed {failures} times: {last_error}")
            try:
                result = await self._apply(event, dead_letter)
            except StoreError as error:
                # The store's state, not the event's fault: retried as long as it lasts.
                level = logging.WARNING if isinstance(error, StoreUnavailable) else logging.ERROR
                log.log(
                    level, "cannot record the event; retrying", extra={"event_id": event.event_id, "error": str(error)}
                )
                raise RetryLater(str(error)) from error
            except Exception as error:  # noqa: BLE001 - counted: after MAX_ATTEMPTS, a dead letter
                failures, last_error = failures + 1, repr(error)
                self._failing = (event.event_id, failures, last_error)
                log.warning(
                    "event handling failed",
                    exc_info=True,
                    extra={
                        "event_id": event.event_id,
                        "event_type": event.event_type,
                        "attempt": failures,
                        "max_attempts": MAX_ATTEMPTS,
                    },
                )
                if dead_letter is not None or failures < MAX_ATTEMPTS:
                    raise RetryLater(last_error) from error
                continue  # that was the last attempt: the dead letter, now
            self._failing = None
            return result

    async def _apply(self, event: events_pb2.Event, dead_letter: DeadLetter | None) -> str:
        """Records `event` (or, given `dead_letter`, only that) in one store transaction."""
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
            effects = notices.Effects()
            if dead_letter is None:
                try:
                    effects = notices.effects_of(event, now)
                except ValueError as error:
                    # UndecodableEvent, or a field no datetime can hold (a Timestamp out of
                    # range): no retry can fix either.
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
            outcome = await self._store.apply_event(applied, now)
            if outcome.dropped_dead_letters:
                log.warning(
                    "dead letters over their bound: the oldest dropped",
                    extra={"dropped": outcome.dropped_dead_letters, "subscription": SUBSCRIPTION},
                )
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
        except (StoreError, OSError) as error:
            log.warning("cannot subscribe yet", extra={"subscription": SUBSCRIPTION, "error": str(error)})
        except Exception:  # noqa: BLE001 - a bug must not end consumption
            log.exception("cannot subscribe", extra={"subscription": SUBSCRIPTION})
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
            except RetryLater:
                pass  # logged by the processor; the event again from the cursor, after the backoff
            except Exception:  # noqa: BLE001 - a bug must not end consumption
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
            try:
                await subscription.unsubscribe()
            except Exception as error:  # noqa: BLE001 - the connection is gone already; resubscribe
                log.debug("unsubscribing failed", extra={"error": str(error)})
    finally:
        try:
            await client.drain()
        except Exception as error:  # noqa: BLE001 - stopping anyway
            log.warning("NATS connection not drained", extra={"error": str(error)})


def _redelivery_delay(message) -> float:
    """How long JetStream waits before delivering a message again: doubling with each delivery,
    from INITIAL_BACKOFF to MAX_BACKOFF."""
    try:
        delivered = max(1, int(message.metadata.num_delivered))
    except Exception:  # noqa: BLE001 - no metadata: the first delivery
        delivered = 1
    return min(MAX_BACKOFF, INITIAL_BACKOFF * 2**delivered)


async def _handle(processor: Processor, message) -> None:
    """Applies one JetStream message: acknowledged once its effect committed, negatively
    acknowledged (delivered again after `_redelivery_delay`) when it did not. Never raises: a
    failure here must not end consumption."""
    try:
        await _settle(processor, message)
    except Exception:  # noqa: BLE001 - ack/nak failed: redelivered after ACK_WAIT, which the inbox makes harmless
        log.exception("a JetStream message could not be settled; it comes back after the ack wait")


async def _settle(processor: Processor, message) -> None:
    """`_handle`'s work: decode, check the producer, process, then ack or nak."""
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
    except RetryLater:
        await message.nak(delay=_redelivery_delay(message))  # logged by the processor
        return
    except Exception:  # noqa: BLE001 - a bug in the processor: delivered again
        log.exception("event handling failed; delivered again later", extra={"event_id": event.event_id})
        await message.nak(delay=_redelivery_delay(message))
        return
    await message.ack()
