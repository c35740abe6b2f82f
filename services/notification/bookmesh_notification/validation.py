"""Errors as the Rust services send them (src/status.rs): a status code, a message, and rich
details in `grpc-status-details-bin` (google.rpc.Status), read by every client with
grpcio-status, tonic-types or connect.

- bad input: INVALID_ARGUMENT with a google.rpc.BadRequest naming **every** offending field;
- refusals: UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED with a
  google.rpc.ErrorInfo whose reason is stable (domain `bookmesh.io`).
"""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

#: The ErrorInfo domain of every bookmesh service.
DOMAIN = "bookmesh.io"


class StatusError(Exception):
    """A call's answer other than OK; the server stack sends it with its details."""

    def __init__(self, code: grpc.StatusCode, message: str, *details) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """`grpc-status-details-bin` with the details, or nothing when there are none."""
        if not self.details:
            return ()
        packed = []
        for detail in self.details:
            container = any_pb2.Any()
            container.Pack(detail)
            packed.append(container)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return tuple(rpc_status.to_status(status).trailing_metadata)


def error_info(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> StatusError:
    """A refusal with a google.rpc.ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    return StatusError(code, message, info)


class FieldViolations:
    """Collects every bad field of a request, then answers INVALID_ARGUMENT listing them all."""

    def __init__(self) -> None:
        self._violations: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self._violations.append((field, description))

    def __bool__(self) -> bool:
        return bool(self._violations)

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self._violations]

    def raise_if_any(self) -> None:
        if not self._violations:
            return
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in self._violations
            ]
        )
        message = f"invalid request: check {', '.join(self.fields)}"
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, message, request)


def parse_uuid(raw: str, field: str, violations: FieldViolations) -> str | None:
    """The UUID in `raw`, canonical (lowercase, hyphenated), or None with a violation."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        violations.add(field, "must be a UUID such as 0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11")
        return None


# Sanity: grpc's numeric codes are google.rpc.Code's.
assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
