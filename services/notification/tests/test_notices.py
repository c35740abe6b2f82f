"""notices.py: what each rental event tells a member, in plain English, with stable ids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf import any_pb2

from bookmesh.rental.v1 import events_pb2 as rental_events
from bookmesh_notification import notices
from bookmesh_notification.notices import DueItem, NoticeKind
from support.feed import envelope, rent_confirmed

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
MEMBER = "0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11"


def effects(payload):
    return notices.effects_of(envelope(payload, 1, event_id="0190f5c2-0000-7000-8000-000000000001"), NOW)


def test_a_confirmed_rental_says_until_when_and_is_watched_for_its_reminder():
    payload = rent_confirmed(MEMBER, "Dune", datetime(2026, 12, 15, 10, 0, tzinfo=timezone.utc))
    result = effects(payload)
    [notice] = result.notices
    assert notice.kind == NoticeKind.RENTAL_CONFIRMED
    assert notice.text == "You have “Dune” until 15 December 2026."
    assert (notice.member_id, notice.book_id, notice.title) == (MEMBER, payload.book_id, "Dune")
    assert notice.due_at == datetime(2026, 12, 15, 10, 0, tzinfo=timezone.utc)
    assert notice.created_at == NOW and notice.event_id.endswith("0001")
    assert result.remember == (DueItem(payload.item_id, MEMBER, payload.book_id, "Dune", notice.due_at),)


def test_a_canceled_rental_gives_the_reason_and_is_forgotten():
    payload = rental_events.RentCanceled(
        member_id=MEMBER, book_id="b", item_id="i", title="Emma", reason="the book is already reserved"
    )
    result = effects(payload)
    assert result.notices[0].text == "Your rental of “Emma” was canceled: the book is already reserved."
    assert result.notices[0].reason == "the book is already reserved"
    assert result.notices[0].kind == NoticeKind.RENTAL_CANCELED
    assert result.forget == ("i",)


@pytest.mark.parametrize(
    "fee, text",
    [
        (0, "You returned “Emma” on time. Thank you!"),
        (1, "You returned “Emma” late: a late fee of 1 point was charged."),
        (30, "You returned “Emma” late: a late fee of 30 points was charged."),
    ],
)
def test_a_return_mentions_the_late_fee_only_when_there_is_one(fee, text):
    result = effects(rental_events.ItemReturned(member_id=MEMBER, book_id="b", item_id="i", late_fee=fee, title="Emma"))
    assert result.notices[0].text == text
    assert result.notices[0].points == fee
    assert result.forget == ("i",)


def test_an_overdue_suspends_the_card():
    due = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    payload = rental_events.ItemOverdue(member_id=MEMBER, book_id="b", item_id="i", title="Ulysses")
    payload.due_at.FromDatetime(due)
    [notice] = effects(payload).notices
    assert notice.kind == NoticeKind.CARD_SUSPENDED
    assert notice.text == (
        "“Ulysses” was due on 30 November 2026: your card is suspended until it is back and the late fee is paid."
    )
    assert notice.due_at == due


def test_a_cleared_overdue_names_the_points_paid():
    [notice] = effects(rental_events.OverdueCleared(member_id=MEMBER, points=20)).notices
    assert notice.kind == NoticeKind.OVERDUE_CLEARED and notice.points == 20
    assert notice.text == (
        "You paid 20 points of late fees: your card is available again once the payment is confirmed."
    )


def test_events_without_a_notice_change_nothing():
    assert effects(rental_events.ItemRented(member_id=MEMBER, book_id="b", item_id="i")) == notices.Effects()
    assert effects(rental_events.ReturnCanceled(member_id=MEMBER, item_id="i")) == notices.Effects()


def test_events_from_before_titles_still_read_well():
    [notice] = effects(rental_events.RentCanceled(member_id=MEMBER, item_id="i")).notices
    assert notice.text == "Your rental of your book was canceled."
    assert (
        effects(rental_events.ItemOverdue(member_id=MEMBER, item_id="i"))
        .notices[0]
        .text.startswith("Your book is overdue")
    )


def test_every_delivery_of_an_event_names_the_same_notice():
    first = effects(rent_confirmed(MEMBER)).notices[0]
    again = effects(rent_confirmed(MEMBER)).notices[0]
    assert first.notice_id == again.notice_id
    other = notices.effects_of(envelope(rent_confirmed(MEMBER), 2), NOW).notices[0]
    assert other.notice_id != first.notice_id
    assert notices.notice_id("e", NoticeKind.RENTAL_CONFIRMED) != notices.notice_id("e", NoticeKind.RENTAL_CANCELED)


def test_a_payload_that_is_not_its_type_cannot_be_applied():
    event = envelope(rent_confirmed(MEMBER), 1)
    event.payload.value = b"\xff\xff\xff"
    with pytest.raises(notices.UndecodableEvent):
        notices.effects_of(event, NOW)
    other = envelope(rent_confirmed(MEMBER), 1)
    other.payload.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/bookmesh.rental.v1.ItemRented", value=b""))
    with pytest.raises(notices.UndecodableEvent):
        notices.effects_of(other, NOW)


def test_a_reminder_is_due_within_two_days_and_not_after_the_due_date():
    item = DueItem("i", MEMBER, "b", "Dune", NOW + timedelta(days=2))
    assert notices.is_due_soon(item, NOW)
    assert not notices.is_due_soon(item, NOW - timedelta(seconds=1))
    assert not notices.is_due_soon(item, item.due_at)
    reminder = notices.reminder(item, NOW)
    assert reminder.kind == NoticeKind.DUE_SOON and reminder.event_id == ""
    assert reminder.text == "“Dune” is due back on 3 December 2026, within two days."
    assert reminder.notice_id == notices.reminder_id("i") == notices.reminder(item, NOW + timedelta(hours=1)).notice_id


def test_dates_are_written_out_in_english_whatever_the_locale():
    assert notices.format_date(datetime(2027, 1, 5, 23, 59, tzinfo=timezone.utc)) == "5 January 2027"
