"""WatchNotices' machinery: a member's new notices as they are written.

A watcher does not re-read a member's notices on a timer. It asks the store for what was
written after the last position it sent whenever this process writes a notice for that member
(the `NoticeHub`), and every `POLL` for what other replicas wrote (Redis is shared).

Bounds, as rental's WatchRentalHistory: at most BOOKMESH_MAX_NOTICE_WATCHERS streams at once
(RESOURCE_EXHAUSTED past it), of which at most MAX_WATCHERS_PER_MEMBER for one member (a few
tabs, not every slot: one member, or one stolen token, cannot starve the others), each open at most
`MAX_LIFETIME` or until the caller's deadline (then it ends with OK: the client watches again,
and lists what it may have missed), one message in flight, and every stream ends (UNAVAILABLE)
when the service starts to stop.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import AsyncIterator, Iterable

import grpc

from . import telemetry
from .notices import Notice
from .readiness import Readiness
from .store import NoticeStore, StoreError
from .validation import StatusError, error_info

#: How often a watcher looks for notices it was not told about.
POLL = 0.5
#: The longest a stream stays open.
MAX_LIFETIME = 600.0
#: Notices read per look.
BATCH = 100
#: Streams one member may hold open on a replica (rental's MAX_WATCHERS_PER_MEMBER).
MAX_WATCHERS_PER_MEMBER = 8


class NoticeHub:
    """Wakes the watchers of members this process just wrote notices for."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, member_ids: Iterable[str]) -> None:
        for member_id in set(member_ids):
            for waiter in self._waiters.get(member_id, ()):
                waiter.set()

    def subscribe(self, member_id: str) -> asyncio.Event:
        waiter = asyncio.Event()
        self._waiters[member_id].add(waiter)
        return waiter

    def unsubscribe(self, member_id: str, waiter: asyncio.Event) -> None:
        waiters = self._waiters.get(member_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[member_id]


class Watchers:
    """The open watch streams of this replica."""

    def __init__(
        self,
        store: NoticeStore,
        hub: NoticeHub,
        readiness: Readiness,
        max_watchers: int,
        max_per_member: int = MAX_WATCHERS_PER_MEMBER,
    ) -> None:
        self._store = store
        self._hub = hub
        self._readiness = readiness
        self._max = max_watchers
        self._max_per_member = max_per_member
        self._open = 0
        #: Streams open per member; a member is removed at zero, so the map is bounded by the
        #: streams open.
        self._members: dict[str, int] = {}

    def acquire(self, member_id: str) -> None:
        """Takes a slot for a stream of `member_id`'s notices, or RESOURCE_EXHAUSTED when every
        slot is taken or the member holds theirs."""
        if self._open >= self._max:
            raise error_info(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this replica already streams notices to {self._max} watchers; retry later",
                "NOTICE_WATCHERS_EXHAUSTED",
                max_notice_watchers=str(self._max),
            )
        held = self._members.get(member_id, 0)
        if held >= self._max_per_member:
            raise error_info(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this member already watches {self._max_per_member} streams on this replica; close one",
                "NOTICE_WATCHERS_PER_MEMBER_EXHAUSTED",
                max_watchers_per_member=str(self._max_per_member),
            )
        self._members[member_id] = held + 1
        self._open += 1
        telemetry.NOTICE_WATCHERS.set(self._open)

    def release(self, member_id: str) -> None:
        held = self._members.pop(member_id) - 1
        if held:
            self._members[member_id] = held
        self._open -= 1
        telemetry.NOTICE_WATCHERS.set(self._open)

    async def follow(self, member_id: str, after: int, lifetime: float) -> AsyncIterator[Notice]:
        """The member's notices written after position `after`, as they come, for `lifetime`
        seconds. Ends with UNAVAILABLE when the service stops or the store cannot be read."""
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + min(lifetime, MAX_LIFETIME)
        waiter = self._hub.subscribe(member_id)
        stopping = self._readiness.stopping
        try:
            while True:
                if stopping.is_set():
                    # The client watches again, on a replica that is not stopping.
                    raise StatusError(grpc.StatusCode.UNAVAILABLE, "the service is stopping; watch again")
                waiter.clear()
                try:
                    notices = await self._store.notices_after(member_id, after, BATCH)
                except StoreError as error:
                    raise StatusError(grpc.StatusCode.UNAVAILABLE, "notices cannot be read now; watch again") from error
                for notice in notices:
                    yield notice  # waits while the reader is slow: one message in flight
                    after = notice.position
                if len(notices) == BATCH:
                    continue
                remaining = ends_at - loop.time()
                if remaining <= 0:
                    return  # OK: the caller watches again
                await _first(waiter.wait(), stopping.wait(), timeout=min(POLL, remaining))
        finally:
            self._hub.unsubscribe(member_id, waiter)


async def _first(*waits, timeout: float) -> None:
    """Returns when one of `waits` finishes or after `timeout`; cancels the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
