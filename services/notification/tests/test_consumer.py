"""consumer.py without a broker: what an event that cannot be applied does. Undecodable (a
payload not of its type, a date no datetime holds): dead-lettered at once. Failing otherwise:
delivered again with backoff, dead-lettered after MAX_ATTEMPTS, the cursor past it once. The
store failing: retried for as long as it fails, never dead-lettered. And neither transport's
loop ever ends because of one event."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from bookmesh.events.v1 import events_pb2
from bookmesh_notification import consumer
from bookmesh_notification.config import Config
from bookmesh_notification.consumer import MAX_ATTEMPTS, SUBSCRIPTION, Processor, RetryLater
from bookmesh_notification.readiness import Readiness
from bookmesh_notification.store import StoreError
from bookmesh_notification.store.sqlite import SqliteStore
from bookmesh_notification.watch import NoticeHub
from support.feed import FakeFeed, envelope, rent_confirmed


class Failing:
    """A store whose `apply_event` raises `error` for event `event_id` (its dead letter too,
    unless `dead_letters_fail` is False), `times` times at most."""

    def __init__(self, store, event_id: str, error: Exception, *, times: int = 10**9, dead_letters_fail=False):
        self._store = store
        self._event_id = event_id
        self._error = error
        self._left = times
        self._dead_letters_fail = dead_letters_fail
        self.attempts = 0

    async def apply_event(self, event, now):
        if event.event_id == self._event_id and (event.dead_letter is None or self._dead_letters_fail):
            self.attempts += 1
            if self._left > 0:
                self._left -= 1
                raise type(self._error)(*self._error.args)
        return await self._store.apply_event(event, now)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture()
async def store(tmp_path):
    store = SqliteStore(tmp_path / "notification.db")
    await store.open()
    yield store
    await store.close()


def out_of_range(member: str, sequence: int) -> events_pb2.Event:
    """A RentConfirmed whose due date is past year 9999: it decodes, but no datetime holds it."""
    payload = rent_confirmed(member)
    payload.due_at.seconds = 10**12
    return envelope(payload, sequence)


async def test_a_date_out_of_range_is_dead_lettered_at_once(store):
    member = str(uuid.uuid4())
    processor = Processor(store, NoticeHub())
    poison = out_of_range(member, 1)
    assert await processor.process(poison) == "dead_lettered"
    [(event_id, letter)] = await store.dead_letters()
    assert event_id == poison.event_id and "range" in letter.error
    assert letter.envelope == poison.SerializeToString()
    assert await store.cursor(SUBSCRIPTION) == 1
    assert await processor.process(poison) == "duplicate"
    assert await processor.process(envelope(rent_confirmed(member, "Fine"), 2)) == "applied"


async def test_an_event_that_keeps_failing_is_dead_lettered_after_max_attempts_once(store):
    member = str(uuid.uuid4())
    poison = envelope(rent_confirmed(member, "Poison"), 1)
    failing = Failing(store, poison.event_id, RuntimeError("a bug"), times=MAX_ATTEMPTS)
    processor = Processor(failing, NoticeHub())
    for _ in range(MAX_ATTEMPTS - 1):
        with pytest.raises(RetryLater):
            await processor.process(poison)
        assert await store.cursor(SUBSCRIPTION) == 0, "not past it while it may still apply"
    assert await processor.process(poison) == "dead_lettered"
    assert failing.attempts == MAX_ATTEMPTS
    [(event_id, letter)] = await store.dead_letters()
    assert event_id == poison.event_id and f"failed {MAX_ATTEMPTS} times" in letter.error and "a bug" in letter.error
    assert await store.cursor(SUBSCRIPTION) == 1
    # Delivered again (a redelivery, a replay): the inbox has it, once.
    assert await processor.process(poison) == "duplicate"
    assert len(await store.dead_letters()) == 1
    assert await store.list_notices(member, 10) == []
    assert await processor.process(envelope(rent_confirmed(member, "Next"), 2)) == "applied"


async def test_an_event_that_fails_then_applies_is_not_dead_lettered(store):
    member = str(uuid.uuid4())
    event = envelope(rent_confirmed(member, "Late"), 1)
    processor = Processor(Failing(store, event.event_id, RuntimeError("once"), times=MAX_ATTEMPTS - 1), NoticeHub())
    for _ in range(MAX_ATTEMPTS - 1):
        with pytest.raises(RetryLater):
            await processor.process(event)
    assert await processor.process(event) == "applied"
    assert await store.dead_letters() == []
    # The count starts again for the next event that fails.
    other = envelope(rent_confirmed(member, "Other"), 2)
    processor = Processor(Failing(store, other.event_id, RuntimeError("again")), NoticeHub())
    with pytest.raises(RetryLater):
        await processor.process(other)


async def test_a_store_error_is_retried_as_long_as_it_lasts_never_dead_lettered(store):
    event = envelope(rent_confirmed(str(uuid.uuid4())), 1)
    failing = Failing(store, event.event_id, StoreError("redis: OOM command not allowed"), times=3 * MAX_ATTEMPTS)
    processor = Processor(failing, NoticeHub())
    for _ in range(3 * MAX_ATTEMPTS):
        with pytest.raises(RetryLater):
            await processor.process(event)
    assert await store.dead_letters() == [] and await store.cursor(SUBSCRIPTION) == 0
    assert await processor.process(event) == "applied"


async def test_a_dead_letter_that_cannot_be_written_is_tried_again_later(store):
    event = envelope(rent_confirmed(str(uuid.uuid4())), 1)
    failing = Failing(store, event.event_id, RuntimeError("twice more"), times=MAX_ATTEMPTS + 2, dead_letters_fail=True)
    processor = Processor(failing, NoticeHub())
    for attempt in range(1, MAX_ATTEMPTS + 2):
        with pytest.raises(RetryLater):
            await processor.process(event)
        # The last attempt and its dead letter both failed: two calls, and no loop; then the
        # dead letter alone, which fails once more.
        assert failing.attempts == attempt + (attempt >= MAX_ATTEMPTS)
    assert await processor.process(event) == "dead_lettered"


class Message:
    """A JetStream message as nats-py gives one, recording how it was settled."""

    def __init__(self, event: events_pb2.Event, delivered: int = 1, fail_settling: bool = False) -> None:
        self.data = event.SerializeToString()
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.fail_settling = fail_settling
        self.acked = False
        self.naks: list[float | None] = []

    async def ack(self) -> None:
        if self.fail_settling:
            raise ConnectionError("the connection to NATS is gone")
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        if self.fail_settling:
            raise ConnectionError("the connection to NATS is gone")
        self.naks.append(delay)

    async def in_progress(self) -> None:
        pass


async def test_jetstream_messages_that_fail_are_delivered_again_with_growing_delays(store):
    member = str(uuid.uuid4())
    poison = envelope(rent_confirmed(member), 1)
    processor = Processor(Failing(store, poison.event_id, RuntimeError("a bug")), NoticeHub())
    messages = [Message(poison, delivered) for delivered in range(1, MAX_ATTEMPTS + 1)]
    for message in messages:
        await consumer._handle(processor, message)  # never raises
    delays = [delay for message in messages for delay in message.naks]
    assert len(delays) == MAX_ATTEMPTS - 1 and delays == sorted(delays) and delays[0] < delays[-1]
    assert max(delays) <= consumer.MAX_BACKOFF
    assert messages[-1].acked, "dead-lettered: acknowledged, the stream goes on"
    assert [event_id for event_id, _ in await store.dead_letters()] == [poison.event_id]

    out = Message(out_of_range(member, 2))
    await consumer._handle(processor, out)
    assert out.acked and len(await store.dead_letters()) == 2

    lost = Message(envelope(rent_confirmed(member), 3), fail_settling=True)
    await consumer._handle(processor, lost)  # the ack fails: it comes back, harmless (the inbox)
    again = Message(envelope(rent_confirmed(member), 3, event_id=envelopes_id(lost)))
    await consumer._handle(processor, again)
    assert again.acked and len(await store.list_notices(member, 10)) == 1


def envelopes_id(message: Message) -> str:
    return events_pb2.Event.FromString(message.data).event_id


async def test_the_feed_moves_past_an_event_that_keeps_failing(store):
    member = str(uuid.uuid4())
    poison = envelope(rent_confirmed(member, "Poison"), 1)
    feed = FakeFeed().start()
    feed.publish(poison, envelope(rent_confirmed(member, "Fine"), 2))
    readiness = Readiness()
    await readiness.set_serving(True)
    config = Config.from_env(
        {"BOOKMESH_INSECURE_PLAINTEXT": "true", "BOOKMESH_RENTAL_ENDPOINTS": f"127.0.0.1:{feed.port}"}
    )
    failing = Failing(store, poison.event_id, RuntimeError("a bug"))
    task = asyncio.ensure_future(consumer.run_feed(Processor(failing, NoticeHub()), failing, config, readiness))
    try:
        async with asyncio.timeout(15):
            while not await store.list_notices(member, 10):
                assert not task.done(), task
                await asyncio.sleep(0.05)
        [notice] = await store.list_notices(member, 10)
        assert notice.title == "Fine"
        assert [event_id for event_id, _ in await store.dead_letters()] == [poison.event_id]
        assert failing.attempts == MAX_ATTEMPTS
        assert len(feed.subscriptions) == MAX_ATTEMPTS, "resubscribed after each failure, from the cursor"
        assert {after for after, _ in feed.subscriptions} == {0}
    finally:
        task.cancel()  # as the service does once its drain is over: the stream waits for events
        await asyncio.gather(task, return_exceptions=True)
        feed.stop()
