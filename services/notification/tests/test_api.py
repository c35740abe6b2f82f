"""api.py, watch.py and the stack's streams in process: a store that answers with an error is
UNAVAILABLE to callers (not INTERNAL); one member cannot take every watcher slot; a stream
closed while a response waits to be sent gives its slot back at once."""

from __future__ import annotations

import asyncio
import os
import uuid

import grpc
import pytest

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh_notification.api import STREAM_END_MARGIN, NotificationService
from bookmesh_notification.readiness import Readiness
from bookmesh_notification.stack import ServerStack
from bookmesh_notification.store.redis import RedisStore
from bookmesh_notification.validation import StatusError
from bookmesh_notification.watch import NoticeHub, Watchers

SERVICE = "bookmesh.notification.v1.NotificationService"
REDIS_URL = os.environ.get("BOOKMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Context:
    """What the handlers ask of a call's context."""

    def __init__(self, remaining: float | None = None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining

    async def send_initial_metadata(self, metadata) -> None:
        pass

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def reason(error: StatusError) -> str:
    [info] = error.details
    return info.reason


@pytest.mark.redis
async def test_a_store_that_answers_with_an_error_is_unavailable_to_callers():
    store = RedisStore(REDIS_URL, f"bookmesh-test:notification:{uuid.uuid4()}:")
    await store.open()
    try:
        member = str(uuid.uuid4())
        # A key of the wrong type makes Redis answer with an error (WRONGTYPE), as OOM, READONLY
        # or NOPERM would: a reply, not a broken connection.
        await store._redis().set(store._key("member:" + member), "not a sorted set")
        api = NotificationService(store, Watchers(store, NoticeHub(), Readiness(), 8, 8))
        with pytest.raises(StatusError) as raised:
            await api.ListNotices(pb.ListNoticesRequest(member_id=member), Context())
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(StatusError) as raised:
            await anext(api.WatchNotices(pb.WatchNoticesRequest(member_id=member), Context(5)))
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await store.drop_all()
        await store.close()


def test_one_member_cannot_take_every_watcher_slot():
    watchers = Watchers(None, NoticeHub(), Readiness(), max_watchers=4, max_per_member=2)
    greedy, other = str(uuid.uuid4()), str(uuid.uuid4())
    watchers.acquire(greedy)
    watchers.acquire(greedy)
    with pytest.raises(StatusError) as refused:
        watchers.acquire(greedy)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(refused.value) == "NOTICE_WATCHERS_PER_MEMBER_EXHAUSTED"
    third = str(uuid.uuid4())
    watchers.acquire(other)
    watchers.acquire(third)
    with pytest.raises(StatusError) as refused:
        watchers.acquire(str(uuid.uuid4()))
    assert reason(refused.value) == "NOTICE_WATCHERS_EXHAUSTED", "the replica's bound still holds"
    watchers.release(greedy)
    watchers.acquire(greedy)
    for member in (greedy, greedy, other):
        watchers.release(member)
    assert watchers._members == {third: 1}, "a member at zero is forgotten: the map stays bounded"
    watchers.release(third)
    assert watchers._members == {}


def test_a_watch_ends_a_margin_before_the_callers_deadline():
    assert STREAM_END_MARGIN == 0.05


async def test_a_stream_closed_while_a_response_waits_releases_its_handler_at_once():
    readiness = Readiness()
    await readiness.set_serving(True)
    stack = ServerStack(SERVICE, readiness, None, lambda peer: None, request_timeout=5, max_concurrent_requests=8)
    released = []

    async def watch(request, context):
        try:
            yield "first"
            await asyncio.sleep(3600)
            yield "never"
        finally:
            released.append("slot")

    responses = stack._stream(watch, f"{SERVICE}/WatchNotices", {})(pb.WatchNoticesRequest(), Context())
    assert await anext(responses) == "first"
    # What grpc does with a stream whose call was cancelled while this response was sent.
    await responses.aclose()
    assert released == ["slot"], "the handler's `finally` ran with the stream's, not later"
    assert stack.in_flight == 0
