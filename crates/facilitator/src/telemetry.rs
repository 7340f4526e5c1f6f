//! Optional OpenTelemetry trace export: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
//! standard variable, e.g. `http://otel-collector:4318`), every `tracing` span (one `request`
//! span per HTTP request with its route, key, network, payer and transaction, and the spans
//! within it) is exported as OTLP over HTTP/protobuf to `{endpoint}/v1/traces`, batched by a
//! background thread. The other standard variables apply too (`OTEL_SERVICE_NAME`, default
//! `x402-facilitator`; `OTEL_EXPORTER_OTLP_HEADERS`; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_BSP_SCHEDULE_DELAY`, …).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The variable that turns the export on.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The running export; [`Telemetry::shutdown`] flushes the spans still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes and stops the export (blocking: call it outside the async runtime).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("OpenTelemetry shutdown: {e}");
        }
    }
}

/// The `tracing` layer exporting spans, when [`ENDPOINT_VAR`] (or the traces-specific
/// variable) is set in `env`; `None` otherwise. Errors: the exporter cannot be built (e.g. a
/// malformed endpoint).
pub fn otlp_layer<S>(
    env: &std::collections::HashMap<String, String>,
) -> Result<Option<(impl Layer<S>, Telemetry)>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let set = |k: &str| env.get(k).is_some_and(|v| !v.trim().is_empty());
    if !set(ENDPOINT_VAR) && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("{ENDPOINT_VAR}: {e}"))?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("x402-facilitator");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("x402-facilitator");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok(Some((layer, Telemetry { provider })))
}
