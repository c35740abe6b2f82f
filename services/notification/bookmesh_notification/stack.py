"""The server stack: what stands between the network and the NotificationService handlers,
in the order of the Rust services' stack (src/server/stack.rs), outermost first. Health and
reflection stay outside it: probes answer even while the service sheds load or waits for its
store.

| # | layer | what it does |
|---|---|---|
| 1 | readiness gate | UNAVAILABLE ("service is starting") until the store is open and migrated |
| 2 | load shed | RESOURCE_EXHAUSTED beyond BOOKMESH_MAX_CONCURRENT_REQUESTS calls in flight, counted in `bookmesh_server_requests_shed_total` |
| 3 | trace | the server span, continuing the caller's `traceparent` (or starting a trace) |
| 4 | metrics | `rpc_server_requests_total`, `rpc_server_duration_seconds`, `rpc_server_active_requests` |
| 5 | deadline | the caller's deadline, capped by BOOKMESH_REQUEST_TIMEOUT, is the handler's: DEADLINE_EXCEEDED a moment before the caller's own timer |
| 6 | authorize | the caller (certificate, token) against the policy: UNAUTHENTICATED / PERMISSION_DENIED with an ErrorInfo, counted and logged |

A server stream (WatchNotices) counts as answered when it opens (`stream_opened`), as a Rust
server stream does when its headers go out; its lifetime is the handler's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Callable

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from . import telemetry
from .auth import Authorizer, Caller, PeerInfo, TokenRefusal, is_known
from .readiness import Readiness
from .validation import StatusError, error_info

log = logging.getLogger("bookmesh_notification.stack")

#: The label and span name of every method outside the contracts.
UNKNOWN_METHOD = "unknown"

#: The server answers DEADLINE_EXCEEDED this long before the caller's own timer fires.
DEADLINE_HEAD_START = 0.002

_CALL: contextvars.ContextVar["_Call | None"] = contextvars.ContextVar("bookmesh_call", default=None)


def stream_opened() -> None:
    """Called by a server-streaming handler once its checks passed: the call counts as
    answered OK now (its metrics), as its headers go out."""
    call = _CALL.get()
    if call is not None:
        call.answered(grpc.StatusCode.OK)


def current_user() -> str | None:
    """The end user the current call is served for, if any (audit and traces only)."""
    call = _CALL.get()
    return call.user if call is not None else None


class _Call:
    """One guarded call: its span and what the metrics have recorded of it."""

    def __init__(self, stack: "ServerStack", method: str, span: trace.Span) -> None:
        self._stack = stack
        self.method = method
        self.span = span
        self.user: str | None = None
        self._watch = telemetry.Stopwatch()
        self._answered = False
        telemetry.SERVER_ACTIVE.labels(stack.service).inc()
        stack.in_flight += 1

    def answered(self, code: grpc.StatusCode) -> None:
        """Records the answer once: counts, duration, in flight."""
        if self._answered:
            return
        self._answered = True
        service = self._stack.service
        telemetry.SERVER_REQUESTS.labels(service, self.method, str(code.value[0])).inc()
        telemetry.SERVER_DURATION.labels(service, self.method).observe(self._watch.elapsed())
        telemetry.SERVER_ACTIVE.labels(service).dec()
        self._stack.in_flight -= 1

    def finish(self, code: grpc.StatusCode) -> None:
        self.answered(code)
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        self.span.end()


def _reset(token: contextvars.Token) -> None:
    try:
        _CALL.reset(token)
    except ValueError:
        pass  # a stream closed from another task's context: nothing of ours to restore there


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    """The call's metadata, first value of each key (text keys only)."""
    values: dict[str, str] = {}
    for key, value in details.invocation_metadata or ():
        if isinstance(value, str):
            values.setdefault(key.lower(), value)
    return values


class ServerStack(grpc.aio.ServerInterceptor):
    """Guards every method of `service` (health and reflection pass untouched)."""

    def __init__(
        self,
        service: str,
        readiness: Readiness,
        authorizer: Authorizer | None,
        peer_of: Callable[[str], PeerInfo | None],
        request_timeout: float,
        max_concurrent_requests: int,
    ) -> None:
        self.service = service
        self._readiness = readiness
        self._authorizer = authorizer
        self._peer_of = peer_of
        self._request_timeout = request_timeout
        self._max_concurrent = max_concurrent_requests
        self.in_flight = 0

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        full = details.method.lstrip("/")
        if full.split("/", 1)[0] != self.service:
            return await continuation(details)
        handler = await continuation(details)
        metadata = _metadata(details)
        if handler is None:
            # A method this service does not have: refused like any call no rule names.
            return grpc.unary_unary_rpc_method_handler(self._unary(None, full, metadata))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, full, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, full, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no client or bidirectional streams in this contract

    # === the layers ===

    def _enter(self, full: str, metadata: dict[str, str]) -> _Call:
        """Gate, shed, span and metrics; StatusError for a call refused before them."""
        if not self._readiness.started:
            raise StatusError(grpc.StatusCode.UNAVAILABLE, "service is starting")
        if self.in_flight >= self._max_concurrent:
            telemetry.SERVER_SHED.labels(self.service).inc()
            raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, "server is at its concurrency limit; retry later")
        known = is_known(full)
        method = full.split("/", 1)[1] if known else UNKNOWN_METHOD
        span = telemetry.tracer().start_span(
            full if known else UNKNOWN_METHOD,
            context=telemetry.parent_context(metadata.get("traceparent"), metadata.get("tracestate")),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": self.service, "rpc.method": method},
        )
        return _Call(self, method, span)

    def _authorize(self, call: _Call, full: str, metadata: dict[str, str], request, context) -> None:
        """Raises StatusError unless the policy lets this caller make this call."""
        if self._authorizer is None:
            return  # the development mode (BOOKMESH_INSECURE_PLAINTEXT): no identities
        peer = self._peer_of(context.peer())
        try:
            caller = self._authorizer.identify(peer, metadata.get("authorization"))
        except TokenRefusal as refusal:
            raise self._refuse(full, Caller(), peer, grpc.StatusCode.UNAUTHENTICATED, refusal.reason) from None
        if caller.workload:
            call.span.set_attribute("peer.workload", caller.workload)
        call.user = caller.user.subject if caller.user else None
        if call.user is None and caller.workload:
            # A workload may name the user it calls for; for the audit trail only.
            named = metadata.get("x-bookmesh-on-behalf-of")
            call.user = named if named and len(named) <= 128 else None
        if call.user:
            call.span.set_attribute("enduser.id", call.user)
        decision = self._authorizer.decide(full, caller)
        if decision.allow:
            return
        if decision.field is not None:
            value = getattr(request, decision.field, None) if not isinstance(request, bytes) else None
            if isinstance(value, str) and value == decision.subject:
                return
            raise self._refuse(full, caller, peer, grpc.StatusCode.PERMISSION_DENIED, "NOT_SELF")
        code = (
            grpc.StatusCode.UNAUTHENTICATED if decision.code == "UNAUTHENTICATED" else grpc.StatusCode.PERMISSION_DENIED
        )
        raise self._refuse(full, caller, peer, code, decision.reason or "POLICY_DENIED")

    def _refuse(
        self, full: str, caller: Caller, peer: PeerInfo | None, code: grpc.StatusCode, reason: str
    ) -> StatusError:
        label = full if is_known(full) else UNKNOWN_METHOD
        server = self._authorizer.server if self._authorizer else ""
        telemetry.AUTHZ_REFUSALS.labels(server, label, reason).inc()
        log.warning(
            "call refused",
            extra={
                "server": server,
                "method": label,
                "reason": reason,
                "workload": caller.workload or "-",
                "subject": caller.user.subject if caller.user else "-",
                "peer": peer.remote_addr if peer else "-",
            },
        )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            message = f"{full}: credentials missing or invalid ({reason})"
        else:
            message = f"{full}: not allowed for this caller ({reason})"
        return error_info(code, message, reason, method=label)

    def _timeout(self, context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._request_timeout
        return max(0.0, min(self._request_timeout, remaining - DEADLINE_HEAD_START))

    # === unary and server-streaming calls ===

    def _unary(self, inner, full: str, metadata: dict[str, str]):
        async def guarded(request, context):
            try:
                call = self._enter(full, metadata)
            except StatusError as refused:
                await context.abort(refused.code, refused.message, refused.trailing_metadata())
            token = _CALL.set(call)
            code = grpc.StatusCode.INTERNAL
            try:
                with trace.use_span(call.span, end_on_exit=False):
                    try:
                        response = await asyncio.wait_for(
                            self._serve(call, inner, full, metadata, request, context), self._timeout(context)
                        )
                        code = grpc.StatusCode.OK
                        return response
                    except asyncio.TimeoutError:
                        code = grpc.StatusCode.DEADLINE_EXCEEDED
                        await context.abort(code, "deadline exceeded")
                    except StatusError as error:
                        code = error.code
                        await context.abort(error.code, error.message, error.trailing_metadata())
                    except (grpc.aio.AbortError, asyncio.CancelledError):
                        code = grpc.StatusCode.CANCELLED
                        raise
                    except Exception:
                        log.exception("handler failed", extra={"method": full})
                        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                call.finish(code)
                _reset(token)

        return guarded

    async def _serve(self, call: _Call, inner, full: str, metadata, request, context):
        self._authorize(call, full, metadata, request, context)
        if inner is None:
            raise StatusError(grpc.StatusCode.UNIMPLEMENTED, f"{full} is not a method of this service")
        return await inner(request, context)

    def _stream(self, inner, full: str, metadata: dict[str, str]):
        async def guarded(request, context):
            try:
                call = self._enter(full, metadata)
            except StatusError as refused:
                await context.abort(refused.code, refused.message, refused.trailing_metadata())
            token = _CALL.set(call)
            code = grpc.StatusCode.INTERNAL
            try:
                with trace.use_span(call.span, end_on_exit=False):
                    try:
                        self._authorize(call, full, metadata, request, context)
                        # Closed with this generator, not whenever the collector finds it: a
                        # stream cancelled while a response waits to be sent must give its
                        # watcher slot back now (the handler's `finally`).
                        async with contextlib.aclosing(inner(request, context)) as responses:
                            async for response in responses:
                                yield response
                        code = grpc.StatusCode.OK
                    except StatusError as error:
                        code = error.code
                        await context.abort(error.code, error.message, error.trailing_metadata())
                    except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                        code = grpc.StatusCode.CANCELLED
                        raise
                    except Exception:
                        log.exception("handler failed", extra={"method": full})
                        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                call.finish(code)
                _reset(token)

        return guarded
