"""The storage interface, one suite over both implementations: SQLite (a file per test) and
Redis (the machine's, a unique key prefix per test, deleted afterwards): exactly once, pages,
reminders, the bounds on what is kept, and errors as the callers need them."""

from __future__ import annotations

import asyncio
import sqlite3
import os
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from bookmesh_notification.notices import DueItem, Notice, NoticeKind, reminder, reminder_id
from bookmesh_notification.store import AppliedEvent, DeadLetter, StoreError, StoreUnavailable
from bookmesh_notification.store.redis import RedisStore
from bookmesh_notification.store.sqlite import SqliteStore

REDIS_URL = os.environ.get("BOOKMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUBSCRIPTION = "notification:rental"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def stores(request, tmp_path):
    """Opens stores of the kind under test (`await stores(**bounds)`); all dropped after."""
    opened = []

    async def make(**bounds):
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / f"notification{len(opened)}.db", **bounds)
        else:
            store = RedisStore(REDIS_URL, f"bookmesh-test:notification:{uuid.uuid4()}:", **bounds)
        opened.append(store)
        try:
            await store.open()
        except StoreUnavailable as error:
            pytest.fail(f"the {request.param} store does not open: {error}")
        return store

    yield make
    for store in opened:
        if isinstance(store, RedisStore):
            await store.drop_all()
        await store.close()


@pytest.fixture()
async def store(stores):
    return await stores()


def notice(member_id: str, event_id: str, kind: NoticeKind = NoticeKind.RENTAL_CONFIRMED, **fields) -> Notice:
    return Notice(
        notice_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{event_id}/{kind}")),
        member_id=member_id,
        kind=kind,
        text=f"notice of {event_id}",
        created_at=NOW,
        event_id=event_id,
        **fields,
    )


def event(sequence: int, *notices: Notice, event_id: str | None = None, **effects) -> AppliedEvent:
    return AppliedEvent(
        subscription=SUBSCRIPTION,
        event_id=event_id or str(uuid.uuid4()),
        event_type="bookmesh.rental.v1.RentConfirmed",
        sequence=sequence,
        notices=notices,
        **effects,
    )


async def test_an_event_writes_its_notices_moves_the_cursor_and_is_applied_once(store):
    member = str(uuid.uuid4())
    first = event(1, notice(member, "e1", title="Dune", due_at=NOW + timedelta(days=14), points=3, reason="r"))
    outcome = await store.apply_event(first, NOW)
    assert not outcome.duplicate
    assert [n.notice_id for n in outcome.written] == [first.notices[0].notice_id]
    assert outcome.written[0].position > 0
    assert await store.cursor(SUBSCRIPTION) == 1

    again = await store.apply_event(first, NOW + timedelta(seconds=5))
    assert again.duplicate and again.written == ()
    listed = await store.list_notices(member, 10)
    assert len(listed) == 1, "a redelivery adds nothing"
    assert listed[0] == outcome.written[0], "the notice reads back as it was written"
    assert listed[0].due_at == NOW + timedelta(days=14)


async def test_a_redelivery_moves_the_cursor_forward_never_back(store):
    applied = event(5)
    await store.apply_event(applied, NOW)
    # The same event at a later position (a producer that re-sequenced; JetStream redelivery).
    await store.apply_event(event(7, event_id=applied.event_id), NOW)
    assert await store.cursor(SUBSCRIPTION) == 7
    await store.apply_event(event(3), NOW)
    assert await store.cursor(SUBSCRIPTION) == 7, "never back"


async def test_a_notice_id_is_written_once_even_from_another_event(store):
    member = str(uuid.uuid4())
    shared = notice(member, "same")
    await store.apply_event(event(1, shared), NOW)
    outcome = await store.apply_event(event(2, shared), NOW)
    assert not outcome.duplicate and outcome.written == ()
    assert len(await store.list_notices(member, 10)) == 1


async def test_concurrent_deliveries_of_one_event_apply_it_once(store):
    member = str(uuid.uuid4())
    delivered = event(1, notice(member, "e1"), notice(member, "e1", NoticeKind.DUE_SOON))
    outcomes = await asyncio.gather(*(store.apply_event(delivered, NOW) for _ in range(8)))
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len(await store.list_notices(member, 10)) == 2


async def test_a_failed_apply_leaves_nothing_behind(store):
    member = str(uuid.uuid4())
    # The second notice cannot be written (its member id is not text): the first must not stay.
    broken = event(9, notice(member, "ok"), notice(object(), "bad"))  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError, sqlite3.Error)):
        await store.apply_event(broken, NOW)
    assert await store.list_notices(member, 10) == []
    assert await store.cursor(SUBSCRIPTION) == 0
    # Not in the inbox either: the same event, repaired, applies.
    repaired = event(9, notice(member, "ok"), event_id=broken.event_id)
    assert not (await store.apply_event(repaired, NOW)).duplicate


async def test_pages_are_newest_first_and_stable_while_notices_arrive(store):
    member, other = str(uuid.uuid4()), str(uuid.uuid4())
    for sequence in range(1, 8):
        await store.apply_event(event(sequence, notice(member, f"m{sequence}"), notice(other, f"o{sequence}")), NOW)
    first = await store.list_notices(member, 3)
    assert [n.event_id for n in first] == ["m7", "m6", "m5"]
    # A notice written between two pages does not shift the next page.
    await store.apply_event(event(8, notice(member, "m8")), NOW)
    second = await store.list_notices(member, 3, before=first[-1].position)
    assert [n.event_id for n in second] == ["m4", "m3", "m2"]
    last = await store.list_notices(member, 3, before=second[-1].position)
    assert [n.event_id for n in last] == ["m1"]
    assert await store.list_notices(str(uuid.uuid4()), 3) == []


async def test_watchers_read_what_was_written_after_a_position(store):
    member = str(uuid.uuid4())
    assert await store.last_position(member) == 0
    await store.apply_event(event(1, notice(member, "a")), NOW)
    head = await store.last_position(member)
    await store.apply_event(event(2, notice(member, "b"), notice(str(uuid.uuid4()), "x")), NOW)
    await store.apply_event(event(3, notice(member, "c")), NOW)
    after = await store.notices_after(member, head, 10)
    assert [n.event_id for n in after] == ["b", "c"], "oldest first, the member's only"
    assert await store.last_position(member) == after[-1].position


async def test_due_items_are_reminded_once_and_forgotten_on_return(store):
    member = str(uuid.uuid4())
    soon = DueItem(str(uuid.uuid4()), member, str(uuid.uuid4()), "Dune", NOW + timedelta(days=1))
    later = DueItem(str(uuid.uuid4()), member, str(uuid.uuid4()), "Emma", NOW + timedelta(days=10))
    returned = DueItem(str(uuid.uuid4()), member, str(uuid.uuid4()), "Ulysses", NOW + timedelta(hours=5))
    await store.apply_event(event(1, remember=(soon, later, returned)), NOW)
    await store.apply_event(event(2, forget=(returned.item_id,)), NOW)

    due = await store.due_before(NOW + timedelta(days=2), 10)
    assert due == [soon], "due within the window, the returned one forgotten"

    results = await asyncio.gather(*(store.remind(soon.item_id, reminder(soon, NOW)) for _ in range(5)))
    written = [r for r in results if r is not None]
    assert len(written) == 1 and written[0].notice_id == reminder_id(soon.item_id)
    assert await store.due_before(NOW + timedelta(days=2), 10) == []
    assert await store.remind(soon.item_id, reminder(soon, NOW)) is None, "once"
    assert [n.kind for n in await store.list_notices(member, 10)] == [NoticeKind.DUE_SOON]

    # A replayed RentConfirmed (its inbox entry pruned) does not remind again.
    await store.apply_event(event(3, remember=(soon,)), NOW)
    for item in await store.due_before(NOW + timedelta(days=2), 10):
        await store.remind(item.item_id, reminder(item, NOW))
    assert len(await store.list_notices(member, 10)) == 1


async def test_an_item_closed_without_a_notice_writes_nothing(store):
    member = str(uuid.uuid4())
    past = DueItem(str(uuid.uuid4()), member, str(uuid.uuid4()), "Old", NOW - timedelta(days=1))
    await store.apply_event(event(1, remember=(past,)), NOW)
    assert await store.due_before(NOW, 10) == [past]
    assert await store.remind(past.item_id, None) is None
    assert await store.due_before(NOW, 10) == []
    assert await store.list_notices(member, 10) == []


async def test_the_inbox_is_pruned_by_age_only(store):
    old, recent = event(1), event(2)
    await store.apply_event(old, NOW - timedelta(days=8))
    await store.apply_event(recent, NOW)
    assert await store.prune_inbox(NOW - timedelta(days=7)) == 1
    assert (await store.apply_event(recent, NOW)).duplicate, "recent ids are still known"
    assert not (await store.apply_event(old, NOW)).duplicate, "a pruned id is forgotten"


async def test_dead_letters_keep_the_envelope(store):
    await store.apply_event(
        event(4, event_id="poison", dead_letter=DeadLetter(b"\x00\x01envelope", "does not decode")), NOW
    )
    assert await store.dead_letters() == [("poison", DeadLetter(b"\x00\x01envelope", "does not decode"))]
    assert (await store.apply_event(event(4, event_id="poison"), NOW)).duplicate
    assert await store.cursor(SUBSCRIPTION) == 4


async def test_opening_twice_migrates_once(store, tmp_path):
    await store.open()
    await store.ping()


async def test_a_member_keeps_only_the_newest_notices(stores):
    store = await stores(max_notices_per_member=3)
    member, other = str(uuid.uuid4()), str(uuid.uuid4())
    await store.apply_event(event(1, notice(other, "o1")), NOW)
    for sequence in range(2, 7):
        await store.apply_event(event(sequence, notice(member, f"m{sequence}")), NOW)
    assert [n.event_id for n in await store.list_notices(member, 10)] == ["m6", "m5", "m4"], "the oldest went"
    assert [n.event_id for n in await store.list_notices(other, 10)] == ["o1"], "another member's stay"
    # A reminder is a notice like the others.
    item = DueItem(str(uuid.uuid4()), member, str(uuid.uuid4()), "Dune", NOW + timedelta(days=1))
    await store.apply_event(event(7, remember=(item,)), NOW)
    assert await store.remind(item.item_id, reminder(item, NOW)) is not None
    assert [n.kind for n in await store.list_notices(member, 10)] == [NoticeKind.DUE_SOON] + [
        NoticeKind.RENTAL_CONFIRMED
    ] * 2
    assert [n.event_id for n in await store.notices_after(member, 0, 10)][:2] == ["m5", "m6"]


async def test_notices_older_than_the_retention_are_pruned(store):
    member = str(uuid.uuid4())
    old = replace(notice(member, "old"), created_at=NOW - timedelta(days=91))
    older = replace(notice(str(uuid.uuid4()), "older"), created_at=NOW - timedelta(days=200))
    await store.apply_event(event(1, old, older), NOW)
    await store.apply_event(event(2, notice(member, "new")), NOW)
    assert await store.prune_notices(NOW - timedelta(days=90)) == 2
    assert [n.event_id for n in await store.list_notices(member, 10)] == ["new"]
    assert await store.list_notices(older.member_id, 10) == []
    assert await store.prune_notices(NOW - timedelta(days=90)) == 0
    if isinstance(store, RedisStore):
        # Nothing left behind: the notices' own keys and their place in the age index.
        client = store._redis()
        assert await client.exists(store._key("notice:" + old.notice_id)) == 0
        assert await client.zcard(store._key("notice_ages")) == 1


async def test_dead_letters_are_bounded_the_oldest_dropped(stores):
    store = await stores(max_dead_letters=2)
    dropped = []
    for n in range(1, 5):
        outcome = await store.apply_event(
            event(n, event_id=f"poison-{n}", dead_letter=DeadLetter(b"envelope", f"error {n}")), NOW
        )
        dropped.append(outcome.dropped_dead_letters)
    assert dropped == [0, 0, 1, 1], "each drop reported, to be logged"
    assert [event_id for event_id, _ in await store.dead_letters()] == ["poison-3", "poison-4"]
    assert await store.cursor(SUBSCRIPTION) == 4


@pytest.mark.redis
async def test_redis_errors_are_store_errors_and_unreachable_is_unavailable():
    store = RedisStore(REDIS_URL, f"bookmesh-test:notification:{uuid.uuid4()}:")
    await store.open()
    try:
        # A reply that is an error (as OOM, READONLY or NOPERM are): not a bug of the caller's.
        with pytest.raises(StoreError) as raised:
            await store._call(store._redis().execute_command("NO-SUCH-COMMAND"))
        assert not isinstance(raised.value, StoreUnavailable)
    finally:
        await store.close()
    nowhere = RedisStore("redis://127.0.0.1:1/0", "bookmesh-test:")
    with pytest.raises(StoreUnavailable):
        await nowhere.open()
    await nowhere.close()


@pytest.mark.redis
async def test_redis_notices_written_before_the_age_index_are_indexed_at_open():
    prefix = f"bookmesh-test:notification:{uuid.uuid4()}:"
    store = RedisStore(REDIS_URL, prefix)
    await store.open()
    try:
        member = str(uuid.uuid4())
        await store.apply_event(event(1, replace(notice(member, "old"), created_at=NOW - timedelta(days=100))), NOW)
        # As version 1 of the layout left it: no age index.
        client = store._redis()
        await client.delete(store._key("notice_ages"))
        await client.set(store._key("schema"), "1")
        await store.open()
        assert await client.get(store._key("schema")) == b"2"
        assert await store.prune_notices(NOW - timedelta(days=90)) == 1
        assert await store.list_notices(member, 10) == []
    finally:
        await store.drop_all()
        await store.close()


async def test_sqlite_folder_that_cannot_be_made_is_unavailable_not_a_crash(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    store = SqliteStore(tmp_path / "a-file" / "data" / "notification.db")
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_sqlite_damaged_file_is_a_store_error(tmp_path):
    (tmp_path / "notification.db").write_bytes(b"this is not a database" * 100)
    store = SqliteStore(tmp_path / "notification.db")
    with pytest.raises(StoreError):
        await store.open()
    await store.close()


def test_the_configured_bounds_reach_the_store(tmp_path):
    from bookmesh_notification.config import Config
    from bookmesh_notification.store import from_config

    for kind in ("sqlite", "redis"):
        config = Config.from_env(
            {
                "BOOKMESH_NOTIFICATION_STORE": kind,
                "BOOKMESH_DATA_DIR": str(tmp_path),
                "BOOKMESH_MAX_NOTICES_PER_MEMBER": "7",
            }
        )
        assert from_config(config)._max_notices == 7
