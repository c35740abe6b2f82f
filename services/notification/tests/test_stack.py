"""stack.py in process, around a deliberately slow handler: the request timeout and the
caller's deadline answered DEADLINE_EXCEEDED by the server, load shedding, the readiness gate."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh.notification.v1 import notification_pb2_grpc
from bookmesh_notification import telemetry
from bookmesh_notification.readiness import Readiness
from bookmesh_notification.stack import ServerStack

SERVICE = "bookmesh.notification.v1.NotificationService"


class Slow(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self) -> None:
        self.cancelled = 0

    async def ListNotices(self, request, context):
        try:
            await asyncio.sleep(float(request.page_token or 0))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return pb.ListNoticesResponse()


def count(code: int) -> float:
    return telemetry.SERVER_REQUESTS.labels(SERVICE, "ListNotices", str(code))._value.get()


@pytest.fixture()
async def server():
    readiness = Readiness()
    await readiness.set_serving(True)
    servicer = Slow()
    stack = ServerStack(SERVICE, readiness, None, lambda peer: None, request_timeout=0.3, max_concurrent_requests=1)
    server = grpc.aio.server(interceptors=[stack])
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield notification_pb2_grpc.NotificationServiceStub(channel), readiness, servicer
    await server.stop(None)


def request(seconds: float) -> pb.ListNoticesRequest:
    return pb.ListNoticesRequest(member_id=str(uuid.uuid4()), page_token=str(seconds))


async def test_the_request_timeout_caps_a_call_and_the_server_says_deadline_exceeded(server):
    stub, _, servicer = server
    before = count(4)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotices(request(2), timeout=5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.details() == "deadline exceeded", "the server's answer, not the client's timer"
    assert count(4) == before + 1
    assert servicer.cancelled == 1, "the handler's work stops at the deadline"


async def test_the_callers_shorter_deadline_wins(server):
    stub, _, _ = server
    before = count(4)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotices(request(2), timeout=0.15)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.05)
    assert count(4) == before + 1


async def test_calls_beyond_the_concurrency_limit_are_shed(server):
    stub, _, _ = server
    shed = telemetry.SERVER_SHED.labels(SERVICE)._value.get()
    slow = asyncio.ensure_future(stub.ListNotices(request(0.2), timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListNotices(request(0), timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert telemetry.SERVER_SHED.labels(SERVICE)._value.get() == shed + 1
    await slow
    await stub.ListNotices(request(0), timeout=5)


async def test_a_service_still_starting_answers_unavailable():
    readiness = Readiness()
    stack = ServerStack(SERVICE, readiness, None, lambda peer: None, request_timeout=1, max_concurrent_requests=8)
    server = grpc.aio.server(interceptors=[stack])
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(Slow(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListNotices(request(0), timeout=5)
            assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.UNAVAILABLE, "service is starting")
            await readiness.set_serving(True)
            await stub.ListNotices(request(0), timeout=5)
    finally:
        await server.stop(None)
