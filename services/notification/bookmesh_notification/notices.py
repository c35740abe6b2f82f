"""What an event means to a member: the notices it writes and the due dates it teaches the
reminders, as pure functions (no I/O, the clock passed in), so each is unit tested.

A notice's id comes from the event's id and the notice's kind, so every delivery of an event
names the same notice; a reminder's from the rental item's id, so an item is reminded once.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from google.protobuf.message import DecodeError

from bookmesh.events.v1 import events_pb2
from bookmesh.rental.v1 import events_pb2 as rental_events


class NoticeKind(enum.IntEnum):
    """bookmesh.notification.v1.NoticeKind, by the same numbers."""

    RENTAL_CONFIRMED = 1
    RENTAL_CANCELED = 2
    BOOK_RETURNED = 3
    CARD_SUSPENDED = 4
    OVERDUE_CLEARED = 5
    DUE_SOON = 6


#: How long before its due date a book is reminded.
REMINDER_WINDOW_SECONDS = 2 * 86400

# Fixed: notice ids must stay the same across versions of this service.
_NOTICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bookmesh.io/notification/notice")

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class Notice:
    """One message to a member, as stored and as ListNotices shows it. `position` is the
    store's write order (0 until written)."""

    notice_id: str
    member_id: str
    kind: NoticeKind
    text: str
    created_at: datetime
    book_id: str = ""
    title: str = ""
    due_at: datetime | None = None
    reason: str = ""
    points: int = 0
    event_id: str = ""
    position: int = 0


@dataclass(frozen=True)
class DueItem:
    """A rented book the reminders watch: when it is due back."""

    item_id: str
    member_id: str
    book_id: str
    title: str
    due_at: datetime


@dataclass(frozen=True)
class Effects:
    """What applying one event changes: notices to write, items to watch, items to forget."""

    notices: tuple[Notice, ...] = ()
    remember: tuple[DueItem, ...] = ()
    forget: tuple[str, ...] = ()


class UndecodableEvent(ValueError):
    """The payload is not the message its event_type names: no retry can fix it."""


#: The payloads this service understands, by event type. Any other rental event (ItemRented,
#: ReturnCanceled, and types added later) is applied without effect.
PAYLOADS = {
    message.DESCRIPTOR.full_name: message
    for message in (
        rental_events.RentConfirmed,
        rental_events.RentCanceled,
        rental_events.ItemReturned,
        rental_events.ItemOverdue,
        rental_events.OverdueCleared,
    )
}


def utc_now() -> datetime:
    """The time, to the millisecond the stores keep (so a notice reads back as it was written)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def notice_id(event_id: str, kind: NoticeKind) -> str:
    """The id of the notice of `kind` that event `event_id` writes."""
    return str(uuid.uuid5(_NOTICE_NAMESPACE, f"{event_id}/{kind.name}"))


def reminder_id(item_id: str) -> str:
    """The id of the DUE_SOON notice of rental item `item_id`."""
    return str(uuid.uuid5(_NOTICE_NAMESPACE, f"due-soon/{item_id}"))


def format_date(moment: datetime) -> str:
    """`15 December 2026` (UTC)."""
    day = moment.astimezone(timezone.utc)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _book(title: str, starts_sentence: bool = False) -> str:
    """The book by its title in quotes; without a title (an event from before titles were
    published), "your book"."""
    if title:
        return f"“{title}”"
    return "Your book" if starts_sentence else "your book"


def _points(points: int) -> str:
    return f"{points} point" if points == 1 else f"{points} points"


def _timestamp(value) -> datetime | None:
    """A google.protobuf.Timestamp field as an aware datetime, None when unset."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=timezone.utc)


def decode(event: events_pb2.Event):
    """The event's payload as its message, or None for a type this service ignores."""
    message_type = PAYLOADS.get(event.event_type)
    if message_type is None:
        return None
    if not event.payload.type_url.endswith("/" + event.event_type):
        raise UndecodableEvent(f"payload type {event.payload.type_url!r} is not {event.event_type}")
    try:
        return message_type.FromString(event.payload.value)
    except DecodeError as error:
        raise UndecodableEvent(f"{event.event_type} does not decode: {error}") from error


def effects_of(event: events_pb2.Event, now: datetime) -> Effects:
    """What `event` changes, written at `now`. Raises UndecodableEvent for a payload that is not
    what its type says."""
    payload = decode(event)
    if payload is None:
        return Effects()

    def notice(kind: NoticeKind, text: str, **fields) -> Notice:
        return Notice(
            notice_id=notice_id(event.event_id, kind),
            member_id=payload.member_id,
            kind=kind,
            text=text,
            created_at=now,
            event_id=event.event_id,
            **fields,
        )

    if isinstance(payload, rental_events.RentConfirmed):
        due_at = _timestamp(payload.due_at)
        text = (
            f"You have {_book(payload.title)} until {format_date(due_at)}."
            if due_at
            else f"You have {_book(payload.title)}: your rental is confirmed."
        )
        remember = ()
        if due_at is not None:
            remember = (DueItem(payload.item_id, payload.member_id, payload.book_id, payload.title, due_at),)
        confirmed = notice(
            NoticeKind.RENTAL_CONFIRMED, text, book_id=payload.book_id, title=payload.title, due_at=due_at
        )
        return Effects(notices=(confirmed,), remember=remember)

    if isinstance(payload, rental_events.RentCanceled):
        reason = payload.reason.strip()
        text = f"Your rental of {_book(payload.title)} was canceled" + (f": {reason}." if reason else ".")
        canceled = notice(NoticeKind.RENTAL_CANCELED, text, book_id=payload.book_id, title=payload.title, reason=reason)
        return Effects(notices=(canceled,), forget=(payload.item_id,))

    if isinstance(payload, rental_events.ItemReturned):
        if payload.late_fee > 0:
            text = f"You returned {_book(payload.title)} late: a late fee of {_points(payload.late_fee)} was charged."
        else:
            text = f"You returned {_book(payload.title)} on time. Thank you!"
        returned = notice(
            NoticeKind.BOOK_RETURNED, text, book_id=payload.book_id, title=payload.title, points=payload.late_fee
        )
        return Effects(notices=(returned,), forget=(payload.item_id,))

    if isinstance(payload, rental_events.ItemOverdue):
        due_at = _timestamp(payload.due_at)
        since = f" was due on {format_date(due_at)}" if due_at else " is overdue"
        text = (
            f"{_book(payload.title, starts_sentence=True)}{since}: "
            "your card is suspended until it is back and the late fee is paid."
        )
        suspended = notice(NoticeKind.CARD_SUSPENDED, text, book_id=payload.book_id, title=payload.title, due_at=due_at)
        # Past its due date: nothing left to remind.
        return Effects(notices=(suspended,), forget=(payload.item_id,))

    if isinstance(payload, rental_events.OverdueCleared):
        text = (
            f"You paid {_points(payload.points)} of late fees: your card is available again "
            "once the payment is confirmed."
        )
        return Effects(notices=(notice(NoticeKind.OVERDUE_CLEARED, text, points=payload.points),))

    return Effects()  # pragma: no cover - PAYLOADS and the branches above name the same types


def is_due_soon(item: DueItem, now: datetime) -> bool:
    """Whether `item` should be reminded at `now`: due within the window, and not yet past."""
    remaining = (item.due_at - now).total_seconds()
    return 0 < remaining <= REMINDER_WINDOW_SECONDS


def reminder(item: DueItem, now: datetime) -> Notice:
    """The DUE_SOON notice of `item`, written at `now`."""
    return Notice(
        notice_id=reminder_id(item.item_id),
        member_id=item.member_id,
        kind=NoticeKind.DUE_SOON,
        text=f"{_book(item.title, starts_sentence=True)} is due back on {format_date(item.due_at)}, within two days.",
        created_at=now,
        book_id=item.book_id,
        title=item.title,
        due_at=item.due_at,
    )
