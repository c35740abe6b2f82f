"""The JetStream transport against the machine's NATS server: the stream and subject the Rust
producer uses, a durable pull consumer named after this service, one message in flight,
acknowledged after the store committed; a restart resumes where the durable consumer stopped;
an envelope claiming another producer is refused."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from bookmesh_notification.config import Config
from bookmesh_notification.consumer import Processor, nats_durable, nats_stream, nats_subject, run_nats
from bookmesh_notification.readiness import Readiness
from bookmesh_notification.store.sqlite import SqliteStore
from bookmesh_notification.watch import NoticeHub
from support.feed import envelope, rent_confirmed

pytestmark = pytest.mark.nats

NATS_URL = os.environ.get("BOOKMESH_TEST_NATS_URL", "nats://127.0.0.1:4222")


def test_names_follow_the_rust_producer():
    assert nats_stream("bookmesh") == "BOOKMESH_RENTAL"
    assert nats_subject("bookmesh") == "bookmesh.rental.events"
    assert nats_durable(None) == "notification"
    assert nats_durable("notification-7d9f.x") == "notification-notification-7d9f-x"


@pytest.fixture()
async def jetstream():
    import nats

    try:
        client = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"NATS is not reachable at {NATS_URL}: {error}")
    prefix = f"ntest{uuid.uuid4().hex[:10]}"
    js = client.jetstream()
    # What the rental service's publisher creates (src/events/nats.rs ensure_stream).
    await js.add_stream(name=nats_stream(prefix), subjects=[nats_subject(prefix)])
    yield js, prefix
    await js.delete_stream(nats_stream(prefix))
    await client.close()


async def publish(js, prefix, event) -> None:
    await js.publish(nats_subject(prefix), event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})


async def consume(store, prefix, until, timeout: float = 10.0) -> None:
    """Runs the consumer until `until()` holds, then stops it as a stop signal would."""
    readiness = Readiness()
    await readiness.set_serving(True)
    config = Config.from_env(
        {"BOOKMESH_EVENT_TRANSPORT": "nats", "BOOKMESH_NATS_URL": NATS_URL, "BOOKMESH_NATS_PREFIX": prefix}
    )
    task = asyncio.ensure_future(run_nats(Processor(store, NoticeHub()), config, readiness))
    try:
        async with asyncio.timeout(timeout):
            while not await until():
                await asyncio.sleep(0.05)
    finally:
        await readiness.mark_stopping()
        await asyncio.wait_for(task, 10)


async def test_events_arrive_once_through_the_durable_consumer_and_a_restart_resumes(jetstream, tmp_path):
    js, prefix = jetstream
    store = SqliteStore(tmp_path / "notification.db")
    await store.open()
    member = str(uuid.uuid4())
    first = envelope(rent_confirmed(member, "One"), 1)
    await publish(js, prefix, first)
    await publish(js, prefix, envelope(rent_confirmed(member, "Forged"), 2, producer="book"))
    await publish(js, prefix, envelope(rent_confirmed(member, "Two"), 3))

    async def count(n):
        return len(await store.list_notices(member, 10)) == n and await store.cursor("notification:rental") == 3

    await consume(store, prefix, lambda: count(2))
    info = await js.consumer_info(nats_stream(prefix), "notification")
    assert info.config.max_ack_pending == 1 and info.config.ack_wait == 5
    assert info.num_ack_pending == 0, "every message acknowledged"

    # Down meanwhile: one new event, and a duplicate publication of an old one.
    await publish(js, prefix, envelope(rent_confirmed(member, "Three"), 4))
    again = envelope(rent_confirmed(member, "One"), 5, event_id=first.event_id)
    await js.publish(nats_subject(prefix), again.SerializeToString())  # no Msg-Id: not deduplicated by NATS

    async def resumed():
        return await store.cursor("notification:rental") == 5

    await consume(store, prefix, resumed)
    titles = [notice.title for notice in await store.list_notices(member, 10)]
    assert titles == ["Three", "Two", "One"], "the forged envelope refused, the copy ignored"
    await store.close()


async def test_an_event_no_datetime_holds_is_dead_lettered_and_consumption_goes_on(jetstream, tmp_path):
    js, prefix = jetstream
    store = SqliteStore(tmp_path / "notification.db")
    await store.open()
    member = str(uuid.uuid4())
    payload = rent_confirmed(member, "Poison")
    payload.due_at.seconds = 10**12  # past year 9999
    poison = envelope(payload, 1)
    await publish(js, prefix, poison)
    await publish(js, prefix, envelope(rent_confirmed(member, "Fine"), 2))

    async def moved_on():
        return await store.cursor("notification:rental") == 2

    await consume(store, prefix, moved_on)
    assert [notice.title for notice in await store.list_notices(member, 10)] == ["Fine"]
    assert [event_id for event_id, _ in await store.dead_letters()] == [poison.event_id]
    info = await js.consumer_info(nats_stream(prefix), "notification")
    assert info.num_ack_pending == 0 and info.num_pending == 0, "both acknowledged"
    await store.close()
