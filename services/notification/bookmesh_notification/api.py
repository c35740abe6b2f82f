"""bookmesh.notification.v1.NotificationService: parse at the edge (every bad field listed),
read the store, answer. Authorization, deadlines, traces and metrics are the stack's
(stack.py); what a notice says is notices.py's.
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh.notification.v1 import notification_pb2_grpc

from .notices import Notice
from .paging import PageRequest
from .stack import stream_opened
from .store import NoticeStore, StoreError
from .validation import FieldViolations, StatusError, parse_uuid
from .watch import MAX_LIFETIME, Watchers

#: A stream ends this long before the caller's deadline, so the caller sees it end with OK.
STREAM_END_MARGIN = 0.05


def _timestamp(moment) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_message(notice: Notice) -> pb.Notice:
    """A stored notice as the contract shows it."""
    return pb.Notice(
        notice_id=notice.notice_id,
        member_id=notice.member_id,
        kind=int(notice.kind),
        text=notice.text,
        created_at=_timestamp(notice.created_at),
        book_id=notice.book_id,
        title=notice.title,
        due_at=_timestamp(notice.due_at),
        reason=notice.reason,
        points=notice.points,
        event_id=notice.event_id,
    )


def _unavailable(error: StoreError) -> StatusError:
    # Unreachable, or answering with an error (a full Redis, a failover): either may pass, and
    # neither is this call's fault, so UNAVAILABLE (retryable), not INTERNAL.
    return StatusError(grpc.StatusCode.UNAVAILABLE, "notices cannot be read now, try again")


class NotificationService(notification_pb2_grpc.NotificationServiceServicer):
    """The API over the store."""

    def __init__(self, store: NoticeStore, watchers: Watchers) -> None:
        self._store = store
        self._watchers = watchers

    async def ListNotices(self, request: pb.ListNoticesRequest, context) -> pb.ListNoticesResponse:
        violations = FieldViolations()
        member_id = parse_uuid(request.member_id, "member_id", violations)
        page = PageRequest.parse(request.page_size, request.page_token, violations)
        violations.raise_if_any()
        try:
            rows = await self._store.list_notices(member_id, page.fetch_limit, page.before)
        except StoreError as error:
            raise _unavailable(error) from error
        rows, next_token = page.finish(rows, lambda notice: notice.position)
        return pb.ListNoticesResponse(notices=[to_message(n) for n in rows], next_page_token=next_token)

    async def WatchNotices(self, request: pb.WatchNoticesRequest, context):
        violations = FieldViolations()
        member_id = parse_uuid(request.member_id, "member_id", violations)
        violations.raise_if_any()
        # The caller's own deadline, not the server's request timeout (which bounds answering a
        # call, not a stream's life): the stream lasts until then, at most MAX_LIFETIME.
        remaining = context.time_remaining()
        lifetime = MAX_LIFETIME if remaining is None else max(0.0, min(MAX_LIFETIME, remaining - STREAM_END_MARGIN))
        self._watchers.acquire(member_id)
        try:
            try:
                # Notices written from now on: what is already there, ListNotices shows.
                head = await self._store.last_position(member_id)
            except StoreError as error:
                raise _unavailable(error) from error
            await context.send_initial_metadata(())
            stream_opened()
            async for notice in self._watchers.follow(member_id, head, lifetime):
                yield pb.WatchNoticesResponse(notice=to_message(notice))
        finally:
            self._watchers.release(member_id)
