"""Calling the notification service from tests: stubs, rich error details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bookmesh.notification.v1 import notification_pb2 as pb
from bookmesh.notification.v1 import notification_pb2_grpc

from .service import Credentials


def stub(channel: grpc.Channel) -> notification_pb2_grpc.NotificationServiceStub:
    return notification_pb2_grpc.NotificationServiceStub(channel)


def list_notices(target: str, credentials: Credentials, member_id: str, **fields) -> pb.ListNoticesResponse:
    with credentials.channel(target) as channel:
        return stub(channel).ListNotices(
            pb.ListNoticesRequest(member_id=member_id, **fields), metadata=credentials.metadata(), timeout=5
        )


def refusal(target: str, credentials: Credentials, member_id: str) -> tuple[grpc.StatusCode, str | None]:
    """The status and ErrorInfo reason of a ListNotices call expected to fail."""
    try:
        list_notices(target, credentials, member_id)
    except grpc.RpcError as error:
        return error.code(), reason(error)
    return grpc.StatusCode.OK, None


def _details(error: grpc.RpcError):
    status = rpc_status.from_call(error)
    return [] if status is None else list(status.details)


def reason(error: grpc.RpcError) -> str | None:
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "bookmesh.io"
            return info.reason
    return None


def violated_fields(error: grpc.RpcError) -> list[str]:
    for detail in _details(error):
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            return [violation.field for violation in request.field_violations]
    return []
