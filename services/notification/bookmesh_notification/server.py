"""The gRPC server every bookmesh service runs (src/server/mod.rs), in Python: the API behind
the stack (stack.py), health that follows readiness (NOT_SERVING until the store is ready and
from the stop signal on, `liveness` SERVING while the process runs and has not failed, Watch
streams ended on drain), reflection v1 and v1alpha listing what this server serves, and the
runtime's limits.
"""

from __future__ import annotations

import asyncio
import random

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2  # noqa: F401 - registers google.rpc.BadRequest for reflection
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from bookmesh.notification.v1 import notification_pb2, notification_pb2_grpc

from .config import Config
from .readiness import Readiness

SERVICE_NAME = notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
#: Reports whether the process runs at all (liveness and startup probes), as opposed to "" and
#: the service's name, which report readiness; NOT_SERVING once it failed (readiness.py).
LIVENESS_NAME = "liveness"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DrainingHealth(HealthServicer):
    """grpc's health servicer, whose Watch streams end with UNAVAILABLE when the service starts
    to stop (so their clients go elsewhere), as the Rust servers' do."""

    def __init__(self, stopping: asyncio.Event) -> None:
        super().__init__()
        self._stopping = stopping
        self._statuses: dict[str, int] = {}

    async def set(self, service: str, status) -> None:
        self._statuses[service] = status
        await super().set(service, status)

    async def Watch(self, request, context) -> None:
        sent = _SentStatus(context)
        watching = asyncio.ensure_future(super().Watch(request, sent))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not watching.done():
            # Let the watch send the last change first (NOT_SERVING, published just before
            # `stopping`), so the client sees why it ends: at most a second, and no write
            # of our own racing the watch's.
            final = self._statuses.get(request.service)
            deadline = asyncio.get_running_loop().time() + 1.0
            while final is not None and sent.last != final and not watching.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                sent.changed.clear()
                try:
                    await asyncio.wait_for(sent.changed.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the service is stopping")
        watching.result()


class _SentStatus:
    """A Watch's context that remembers the last status it sent."""

    def __init__(self, context) -> None:
        self._context = context
        self.last = None
        self.changed = asyncio.Event()

    async def write(self, message) -> None:
        await self._context.write(message)
        self.last = message.status
        self.changed.set()

    def __getattr__(self, name: str):
        return getattr(self._context, name)


def _register_reflection_v1() -> None:
    """grpc.reflection.v1 is v1alpha renamed (same messages, same numbers); grpcio-reflection
    ships only v1alpha, so the v1 descriptor is made from it, for `describe` to resolve."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"

    def rename(name: str) -> str:
        return name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")

    def fix(message) -> None:
        for field in message.field:
            if field.type_name:
                field.type_name = rename(field.type_name)
        for nested in message.nested_type:
            fix(nested)

    for message in proto.message_type:
        fix(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def server_options(config: Config) -> list[tuple[str, object]]:
    """The runtime's limits (docs/server-runtime.md), as grpc core options."""
    age = config.max_connection_age * random.uniform(0.9, 1.1)
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.max_metadata_size", config.max_header_list_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_interval * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # A client pinging more often than this while nothing is sent is told to stop.
        ("grpc.http2.min_ping_interval_without_data_ms", int(config.min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        # Never share the port with another process by accident.
        ("grpc.so_reuseport", 0),
    ]
    if config.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", int(age * 1000)),
            # Streams opened before the GOAWAY may finish: a watch lasts at most ten minutes.
            ("grpc.max_connection_age_grace_ms", 610_000),
        ]
    return options


def build(
    config: Config,
    readiness: Readiness,
    api: notification_pb2_grpc.NotificationServiceServicer,
    interceptors: list,
) -> tuple[grpc.aio.Server, DrainingHealth]:
    """The server with its services, not started; health NOT_SERVING until readiness says."""
    server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(api, server)

    health = DrainingHealth(readiness.stopping)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

    served = [SERVICE_NAME, HEALTH_NAME, REFLECTION_V1, REFLECTION_V1ALPHA]
    _register_reflection_v1()
    reflection = ReflectionServicer(served)
    for name in (REFLECTION_V1ALPHA, REFLECTION_V1):
        handler = grpc.stream_stream_rpc_method_handler(
            reflection.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )
    return server, health


async def follow_readiness(health: DrainingHealth, readiness: Readiness) -> None:
    """Initial statuses, then "" and the service follow readiness."""
    await health.set("", NOT_SERVING)
    await health.set(SERVICE_NAME, NOT_SERVING)
    await health.set(LIVENESS_NAME, SERVING)

    async def follow(serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        await health.set("", status)
        await health.set(SERVICE_NAME, status)
        if not readiness.alive:
            await health.set(LIVENESS_NAME, NOT_SERVING)

    readiness.on_change(follow)
