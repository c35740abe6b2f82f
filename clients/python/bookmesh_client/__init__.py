"""A small, idiomatic layer over the generated bookmesh stubs.

It shows what every bookmesh client should do: talk TLS and check the servers against the
mesh's certificate authority, carry a bearer token (and, for a workload, its own certificate),
give every call a deadline, retry UNAVAILABLE (the mesh answers it for a replica that is
starting, draining or gone) with jittered backoff, and read the rich error details
(google.rpc.BadRequest, google.rpc.ErrorInfo) that come with errors.
"""

from __future__ import annotations

import os
import random
import time
from typing import Callable, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bookmesh.bestbook.v1 import bestbook_pb2_grpc
from bookmesh.book.v1 import book_pb2_grpc
from bookmesh.events.v1 import events_pb2_grpc
from bookmesh.member.v1 import member_pb2_grpc
from bookmesh.rental.v1 import rental_pb2_grpc

Response = TypeVar("Response")

#: Where the services are; `make run` serves them on these ports.
ADDRESSES = {
    "book": os.environ.get("BOOKMESH_BOOK", "localhost:50051"),
    "member": os.environ.get("BOOKMESH_MEMBER", "localhost:50052"),
    "rental": os.environ.get("BOOKMESH_RENTAL", "localhost:50053"),
    "bestbook": os.environ.get("BOOKMESH_BESTBOOK", "localhost:50054"),
}

#: Deadline of one call, in seconds.
DEFAULT_TIMEOUT = 2.0


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


class Mesh:
    """Stubs for every service, over one TLS channel each.

    `ca` is the authority the servers' certificates must chain to (`make run`'s is
    data/pki/ca.crt); `token` is the user's bearer token (`make -s token ROLE=...`); a workload
    also presents its own `certificate` and `key`. Each defaults to its environment variable:
    BOOKMESH_CA, BOOKMESH_TOKEN, BOOKMESH_CLIENT_CERT, BOOKMESH_CLIENT_KEY.
    """

    def __init__(
        self,
        addresses: dict[str, str] | None = None,
        *,
        ca: str | None = None,
        token: str | None = None,
        certificate: str | None = None,
        key: str | None = None,
    ) -> None:
        addresses = addresses or ADDRESSES
        ca = ca or os.environ.get("BOOKMESH_CA", "data/pki/ca.crt")
        token = token if token is not None else os.environ.get("BOOKMESH_TOKEN")
        certificate = certificate or os.environ.get("BOOKMESH_CLIENT_CERT")
        key = key or os.environ.get("BOOKMESH_CLIENT_KEY")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca),
            private_key=_read(key),
            certificate_chain=_read(certificate),
        )
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        self._channels = {name: grpc.secure_channel(target, credentials) for name, target in addresses.items()}
        self.books = book_pb2_grpc.BookServiceStub(self._channels["book"])
        self.members = member_pb2_grpc.MemberServiceStub(self._channels["member"])
        self.rentals = rental_pb2_grpc.RentalServiceStub(self._channels["rental"])
        self.bestbooks = bestbook_pb2_grpc.BestBookServiceStub(self._channels["bestbook"])
        self.rental_events = events_pb2_grpc.EventFeedServiceStub(self._channels["rental"])

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def call(
    method: Callable[..., Response],
    request: object,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = 3,
) -> Response:
    """Calls `method` with a deadline; retries UNAVAILABLE with jittered exponential backoff.

    Only use it for calls that are safe to repeat (the proto comments say which).
    """
    for attempt in range(1, attempts + 1):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


def _details(error: grpc.RpcError, message_type):
    status = rpc_status.from_call(error)
    if status is None:
        return []
    found = []
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            found.append(message)
    return found


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """The offending fields of an INVALID_ARGUMENT, from its google.rpc.BadRequest detail."""
    return {
        violation.field: violation.description
        for bad_request in _details(error, error_details_pb2.BadRequest)
        for violation in bad_request.field_violations
    }


def refusal_reason(error: grpc.RpcError) -> str | None:
    """Why an UNAUTHENTICATED or PERMISSION_DENIED was refused (google.rpc.ErrorInfo.reason)."""
    infos = _details(error, error_details_pb2.ErrorInfo)
    return infos[0].reason if infos else None


def wait_until(probe: Callable[[], Response | None], timeout: float = 20.0) -> Response:
    """Polls `probe` until it returns something; the sagas are eventually consistent."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)
