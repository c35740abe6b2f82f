"""Logs, traces and metrics, set up once per process, the same signals as the Rust services
(src/telemetry.rs, src/metrics.rs, docs/observability.md):

- logs: one JSON object per line (or pretty on a terminal), every line written inside a span
  carrying its `trace_id` and `span_id`;
- traces: OpenTelemetry spans, exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT
  (or ..._TRACES_ENDPOINT) is set; `service.name` is `notification` unless OTEL_SERVICE_NAME
  says otherwise. Without an exporter the spans still get real ids, so logs and events join;
- metrics: the Rust services' names, labels and buckets, in a registry `/metrics` renders.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import datetime, timezone

from opentelemetry import trace
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from .config import WORKLOAD

# === metrics ===

# The Rust services export no `_created` series; neither does this one.
disable_created_metrics()

#: The registry `/metrics` renders: only this service's own series, as the Rust services.
REGISTRY = CollectorRegistry(auto_describe=True)

#: Latency buckets from 1 ms to 10 s (src/metrics.rs).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SERVER_REQUESTS = Counter(
    "rpc_server_requests",  # prometheus_client adds `_total`
    "gRPC calls served, by service, method and status code",
    ["rpc_service", "rpc_method", "rpc_grpc_status_code"],
    registry=REGISTRY,
)
SERVER_DURATION = Histogram(
    "rpc_server_duration_seconds",
    "Time to answer a gRPC call, by service and method",
    ["rpc_service", "rpc_method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SERVER_ACTIVE = Gauge("rpc_server_active_requests", "gRPC calls being served now", ["rpc_service"], registry=REGISTRY)
SERVER_SHED = Counter(
    "bookmesh_server_requests_shed",
    "Calls answered RESOURCE_EXHAUSTED because the server was at its concurrency limit",
    ["service"],
    registry=REGISTRY,
)
SERVER_CONNECTIONS = Gauge("bookmesh_server_connections", "Client connections open now", registry=REGISTRY)
SERVER_CONNECTIONS_REFUSED = Counter(
    "bookmesh_server_connections_refused",
    "Client connections closed by the server's protections, by reason",
    ["reason"],
    registry=REGISTRY,
)
AUTHZ_REFUSALS = Counter(
    "bookmesh_authz_refusals",
    "Calls refused for missing or bad credentials or by the policy, by server, method and reason",
    ["server", "rpc_method", "reason"],
    registry=REGISTRY,
)
CONSUMER_EVENTS = Counter(
    "bookmesh_consumer_events",
    "Events handled by a consumer, by outcome",
    ["subscription", "outcome"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "bookmesh_consumer_lag_seconds",
    "Time between an event's commit at the producer and its handling, last event",
    ["subscription"],
    registry=REGISTRY,
)
CONSUMER_POSITION = Gauge(
    "bookmesh_consumer_position",
    "Feed sequence of the last event a consumer handled",
    ["subscription"],
    registry=REGISTRY,
)
ROWS_PRUNED = Counter("bookmesh_rows_pruned", "Rows deleted by retention", ["table"], registry=REGISTRY)
NOTICE_WATCHERS = Gauge("bookmesh_notification_watchers", "WatchNotices streams open now", registry=REGISTRY)
REMINDERS = Counter(
    "bookmesh_notification_reminders", "DUE_SOON notices written by the reminder task", registry=REGISTRY
)

# === traces ===

_PROPAGATOR = TraceContextTextMapPropagator()


def _otlp_requested() -> bool:
    def set_(name: str) -> bool:
        return bool(os.environ.get(name, "").strip())

    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return not disabled and (set_("OTEL_EXPORTER_OTLP_ENDPOINT") or set_("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Telemetry:
    """The tracer provider; `shutdown` flushes spans not exported yet (at the end of main)."""

    def __init__(self, provider: TracerProvider, exporting: bool) -> None:
        self.provider = provider
        self.exporting = exporting

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception as error:  # noqa: BLE001 - the process is ending; say so and go on
            print(f"telemetry: flushing spans failed: {error}", file=sys.stderr)


#: The sampler's variables, read by the SDK's TracerProvider as the Rust services' SDK reads
#: them (the kind overlay keeps a tenth of the traces, parent-based).
SAMPLER_ENV = ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")


def init_tracing() -> Telemetry:
    """Installs the tracer provider, with an OTLP exporter when the environment asks for one."""
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: WORKLOAD}
    provider = TracerProvider(resource=Resource.create(attributes))
    exporting = False
    if _otlp_requested():
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            exporting = True
            sampling = ", ".join(f"{name}={os.environ[name]}" for name in SAMPLER_ENV if os.environ.get(name))
            if sampling:
                print(f"telemetry: exporting traces, sampled by {sampling}", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - without an exporter the service still runs
            print(f"telemetry: no OTLP exporter ({error}); traces are not exported", file=sys.stderr)
    trace.set_tracer_provider(provider)
    return Telemetry(provider, exporting)


def tracer() -> trace.Tracer:
    return trace.get_tracer("bookmesh")


def parent_context(traceparent: str | None, tracestate: str | None = None):
    """The OpenTelemetry context continuing W3C `traceparent` (None or malformed: a new trace)."""
    carrier = {}
    if traceparent:
        carrier["traceparent"] = traceparent
        if tracestate:
            carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier, getter=DefaultGetter())


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex, if a span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# === logs ===


class _TraceIds(logging.Filter):
    """Puts the current span's ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        record.trace_id, record.span_id = ids if ids else (None, None)
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "trace_id", "span_id"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields passed with `extra=`."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, target, message, trace_id, span_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.replace("WARNING", "WARN"),
            "target": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "trace_id", None):
            line["trace_id"] = record.trace_id
            line["span_id"] = record.span_id
        line.update(_fields(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class PrettyFormatter(logging.Formatter):
    """`2026-12-01T11:05:45.123456Z  INFO target: message key=value trace_id=…`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if getattr(record, "trace_id", None):
            fields["trace_id"] = record.trace_id
        rest = " ".join(f"{key}={value}" for key, value in fields.items())
        level = record.levelname.replace("WARNING", "WARN")
        line = f"{_timestamp(record)} {level:>5} {record.name}: {record.getMessage()}" + (f" {rest}" if rest else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def init_logging(log_format: str, level: str) -> None:
    """Logs to stdout: JSON unless `pretty` (or `auto` on a terminal)."""
    json_lines = log_format == "json" or (log_format == "auto" and not sys.stdout.isatty())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if json_lines else PrettyFormatter())
    handler.addFilter(_TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries speak up only when something is wrong.
    for noisy in ("grpc", "asyncio", "nats", "redis", "opentelemetry"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Stopwatch:
    """Seconds since it was made, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start
