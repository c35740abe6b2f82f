//! Logging and tracing, set up once per process.
//!
//! Logs: pretty on a terminal, JSON for log collectors. Traces: exported over OTLP/gRPC when the
//! standard OpenTelemetry variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_SCHEDULE_DELAY`… are honoured by the SDK); with none set there is no exporter and
//! no cost. Spans come from `tracing` spans through tracing-opentelemetry; their parents and ids
//! follow the W3C trace context that [`crate::trace_context`] propagates.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps the exporter alive; flushes pending spans when dropped (at the end of `main`).
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
    }
}

fn otlp_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn tracer_provider(service: &str) -> Option<SdkTracerProvider> {
    if !otlp_requested() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("telemetry: no OTLP exporter ({error}); traces are not exported");
            return None;
        }
    };
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    // OTEL_SERVICE_NAME (read by the resource's environment detector) wins over our default.
    let resource = if std::env::var("OTEL_SERVICE_NAME").is_ok() {
        opentelemetry_sdk::Resource::builder().build()
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    };
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build(),
    )
}

/// Installs logging (level from `RUST_LOG`, default `info`) and, if configured, OTLP trace
/// export for `service`. Keep the returned guard until the process ends. Calling it twice is
/// harmless (the first subscriber stays), which keeps tests simple.
pub(crate) fn init(service: &str, format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let provider = tracer_provider(service);
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("bookmesh")));
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let _already_set = if json {
        registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init()
    } else {
        registry.with(fmt).try_init()
    };
    Telemetry { provider }
}

/// Makes `span` the next hop of `parent` (when there is one) and returns the trace context of
/// `span` itself: the exported span's own ids when traces are exported, fresh ids otherwise.
/// Records `trace_id` and `span_id` on the span, so every log line inside it carries them.
pub(crate) fn enter_trace(
    span: &tracing::Span,
    parent: Option<crate::trace_context::TraceContext>,
) -> crate::trace_context::TraceContext {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if let Some(parent) = parent {
        let remote = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(parent.trace_id),
            opentelemetry::trace::SpanId::from_bytes(parent.span_id),
            if parent.sampled {
                opentelemetry::trace::TraceFlags::SAMPLED
            } else {
                opentelemetry::trace::TraceFlags::default()
            },
            true,
            opentelemetry::trace::TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    let trace = if own.is_valid() {
        crate::trace_context::TraceContext {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            sampled: own.is_sampled(),
        }
    } else {
        parent.map_or_else(crate::trace_context::TraceContext::new_root, |p| p.child())
    };
    span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    span.record("span_id", tracing::field::display(trace.span_id_hex()));
    trace
}

/// Runs `future` as the server side of an HTTP request that is not a gRPC call (the gateway's
/// JSON and gRPC-Web), in a server span named `name` that continues the caller's
/// `traceparent` (a browser's, or curl's) or starts a trace. The calls it makes to the services
/// are its children, so a browser's request is one trace end to end. `name` must come from a
/// closed set (the contracts' methods), never from the request.
pub async fn in_http_server_span<F: std::future::Future>(
    name: &'static str,
    traceparent: Option<&str>,
    future: F,
) -> F::Output {
    let caller = traceparent.and_then(crate::trace_context::TraceContext::parse);
    let span = tracing::info_span!(
        "http",
        otel.name = name,
        otel.kind = "server",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let trace = enter_trace(&span, caller);
    tracing::Instrument::instrument(crate::trace_context::scope(trace, future), span).await
}
