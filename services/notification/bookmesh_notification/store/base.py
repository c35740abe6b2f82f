"""The storage interface: one small async API over SQLite (local) and Redis (Kubernetes), so
the consumer, the reminders and the API never know which one they use. Both implementations
run the same test suite (tests/test_store.py).

The guarantees every implementation gives:

- `apply_event` is atomic: the event's notices, the due dates it teaches, its id in the inbox
  and the cursor move together, or not at all. An event already in the inbox changes nothing
  but the cursor (a redelivery), and the cursor never moves back.
- Notices keep their first write: writing a notice id again changes nothing.
- `remind` writes an item's DUE_SOON notice once, whoever asks and however often.
- `position` orders notices by write; listing is newest first, keyset-paginated on it.
- Bounded: a member keeps at most `max_notices_per_member` notices (the oldest go when a new
  one is written), `prune_notices` drops notices older than the retention, and at most
  `max_dead_letters` dead letters are kept (the oldest go first). Redis in Kubernetes runs with
  `noeviction`: what is never deleted fills it, and then every write fails.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from ..config import Config
from ..notices import DueItem, Notice

#: Notices kept per member (BOOKMESH_MAX_NOTICES_PER_MEMBER): ListNotices pages through them,
#: older ones are of no use to anyone.
MAX_NOTICES_PER_MEMBER = Config.max_notices_per_member
#: Dead letters kept; beyond, the oldest are dropped, and the consumer logs the drop. An
#: operator reads them long before (each was logged at ERROR when it arrived).
MAX_DEAD_LETTERS = 1000


class StoreError(Exception):
    """The store failed an operation: Redis refusing a write (OOM under `noeviction`, READONLY
    after a failover, NOPERM, BUSY), SQLite's file corrupt. Nothing the caller sent is at fault:
    UNAVAILABLE to callers, retried by the consumer (never a reason to dead-letter an event)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (retryable: UNAVAILABLE to callers, retry for the
    consumer)."""


@dataclass(frozen=True)
class DeadLetter:
    """An event no retry can apply (its payload is not what its type says, or handling it
    failed every attempt): kept for an operator with the whole envelope, and the stream goes
    on."""

    envelope: bytes
    error: str


@dataclass(frozen=True)
class AppliedEvent:
    """One consumed event and what it changes."""

    subscription: str
    event_id: str
    event_type: str
    sequence: int
    notices: tuple[Notice, ...] = ()
    remember: tuple[DueItem, ...] = ()
    forget: tuple[str, ...] = ()
    dead_letter: DeadLetter | None = None


@dataclass(frozen=True)
class Outcome:
    """What `apply_event` did: `duplicate` when the inbox already had the event; `written`, the
    notices written now, with their positions."""

    duplicate: bool
    written: tuple[Notice, ...] = ()
    #: Old dead letters dropped to make room for this event's (over `max_dead_letters`).
    dropped_dead_letters: int = 0


class NoticeStore(abc.ABC):
    """Notices, the inbox, the cursor and the due dates of one notification service."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connects and migrates (idempotent; replicas may race). Raises StoreUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises StoreUnavailable unless the store answers now (readiness)."""

    @abc.abstractmethod
    async def apply_event(self, event: AppliedEvent, now: datetime) -> Outcome:
        """Applies `event` atomically, exactly once (see the module's guarantees)."""

    @abc.abstractmethod
    async def cursor(self, subscription: str) -> int:
        """The feed position of the last event handled on `subscription` (0: none)."""

    @abc.abstractmethod
    async def list_notices(self, member_id: str, limit: int, before: int | None = None) -> list[Notice]:
        """Up to `limit` of the member's notices, newest first, written before position
        `before` (None: from the newest)."""

    @abc.abstractmethod
    async def notices_after(self, member_id: str, after: int, limit: int) -> list[Notice]:
        """Up to `limit` of the member's notices written after position `after`, oldest first
        (what a watcher has not sent yet)."""

    @abc.abstractmethod
    async def last_position(self, member_id: str) -> int:
        """The position of the member's newest notice (0: none)."""

    @abc.abstractmethod
    async def due_before(self, deadline: datetime, limit: int) -> list[DueItem]:
        """Up to `limit` watched items due at or before `deadline`, not reminded yet, earliest
        first."""

    @abc.abstractmethod
    async def remind(self, item_id: str, notice: Notice | None) -> Notice | None:
        """Closes item `item_id` for the reminders and writes `notice` (its DUE_SOON notice;
        None to close it silently, for an item already past due), once: the notice written now,
        or None if the item was closed or forgotten before."""

    @abc.abstractmethod
    async def prune_inbox(self, older_than: datetime) -> int:
        """Forgets inbox entries applied before `older_than`; returns how many."""

    @abc.abstractmethod
    async def prune_notices(self, older_than: datetime) -> int:
        """Deletes notices written before `older_than`; returns how many. (The count per member
        is kept at every write.)"""

    @abc.abstractmethod
    async def dead_letters(self) -> list[tuple[str, DeadLetter]]:
        """The dead letters kept, oldest first, with their event ids (tests, operators)."""
