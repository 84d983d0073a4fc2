//! Logging, trace export and the names of spans, attributes and metrics.
//!
//! Logs go to stderr (JSON with `ARBITER_LOG_FORMAT=json`), filtered by `RUST_LOG`.
//! Traces are exported over OTLP/gRPC only when the standard OpenTelemetry variables
//! name a collector (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the SDK reads the rest (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`). Nothing is exported otherwise.
//!
//! The request path's spans below the RPC span (pipeline stages, the audit commit
//! wait) are DEBUG spans that only the trace exporter asks for, so without a collector
//! they cost one cached interest check each.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

// Attribute names (`arbiter.agent_id`, `arbiter.decision`, `arbiter.stage`) are written
// where they are set: `tracing`'s `fields(...)` and `debug_span!` take field names as
// literal tokens, not constants (docs/observability.md lists them).

/// Span names. Stage spans are named after their stage (`halt`, `trust`, `budget`,
/// `consent`, `scope`, `approval`) and carry `arbiter.stage`.
pub mod span {
    /// One per gRPC call, around everything the server does for it; its OpenTelemetry
    /// name is the full method (`arbiter.v1.DecisionService/Evaluate`).
    pub const RPC: &str = "rpc";
    /// The wait for the audit entry's group commit, inside Evaluate.
    pub const AUDIT_COMMIT: &str = "audit.commit";
}

/// Prometheus metric names (docs/observability.md lists them with their labels).
pub mod metric {
    pub const DECISIONS: &str = "arbiter_decisions_total";
    pub const DECISION_SECONDS: &str = "arbiter_decision_duration_seconds";
    pub const AUDIT_BATCH_ENTRIES: &str = "arbiter_audit_batch_entries";
    pub const AUDIT_COMMIT_SECONDS: &str = "arbiter_audit_commit_duration_seconds";
    pub const AUDIT_COMMIT_FAILURES: &str = "arbiter_audit_commit_failures_total";
    pub const AUDIT_HEAD_SEQ: &str = "arbiter_audit_head_seq";
    pub const AUDIT_QUEUE_DEPTH: &str = "arbiter_audit_queue_depth";
    pub const APPROVALS_PENDING: &str = "arbiter_approvals_pending";
    pub const HALTS_ACTIVE: &str = "arbiter_halts_active";
    pub const RESERVATIONS_OPEN: &str = "arbiter_reservations_open";
    pub const DB_POOL_CONNECTIONS: &str = "arbiter_db_pool_connections";
    pub const DB_POOL_MAX: &str = "arbiter_db_pool_max_connections";
    pub const POLICY_RELOADS: &str = "arbiter_policy_reloads_total";
    pub const AUTH_REFUSALS_DROPPED: &str = "arbiter_auth_refusals_dropped_total";
    pub const GRPC_REQUESTS: &str = "arbiter_grpc_requests_total";
    pub const GRPC_SECONDS: &str = "arbiter_grpc_request_duration_seconds";
    pub const WEBHOOK_DELIVERIES: &str = "arbiter_webhook_deliveries_total";
    pub const WEBHOOK_DEAD_LETTERS: &str = "arbiter_webhook_dead_letters_total";
    pub const WEBHOOK_QUEUE_DEPTH: &str = "arbiter_webhook_queue_depth";
    pub const WEBHOOK_LOG_LAGS: &str = "arbiter_webhook_log_lags_total";
}

/// What `init` set up; `shutdown` flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span still queued and stops the exporter. Blocking: it waits for
    /// the collector (bounded by the exporter's timeout), so call it off the runtime's
    /// worker threads.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                crate::cli::term::err_line(format_args!(
                    "warning: flushing traces to the OTLP collector failed: {e}"
                ));
            }
        }
    }
}

/// Stderr for log records, each made safe for whoever reads the log: a field may hold
/// text a caller chose (an error quoting a request, a reason), and a newline in it must
/// not forge a record nor an ESC drive the operator's terminal. Text records are one
/// escaped line (so colours are off); JSON records keep their value (`json_safe`).
/// `fmt` formats a whole record and writes it with one `write_all`.
struct SafeStderr {
    json: bool,
}

impl std::io::Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let safe = safe_record(self.json, &String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(safe.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn safe_record(json: bool, record: &str) -> String {
    if json {
        return crate::domain::text::json_safe(record);
    }
    let body = record.strip_suffix('\n').unwrap_or(record);
    let ends = if body.len() < record.len() { "\n" } else { "" };
    crate::domain::text::escape_line(body) + ends
}

/// Installs the global subscriber once. `export` turns on OTLP trace export when the
/// environment configures it, with that default service name (only `serve` and
/// `mcp-gateway` ask; CLI commands never export).
pub fn init(export: Option<&'static str>) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("ARBITER_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt_layer = if json {
        fmt::layer()
            .with_writer(|| SafeStderr { json: true })
            .with_target(false)
            .event_format(WithTraceIds(
                fmt::format().json().flatten_event(true).with_target(false),
            ))
            .fmt_fields(fmt::format::JsonFields::new())
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer()
            .with_writer(|| SafeStderr { json: false })
            .with_ansi(false)
            .with_target(false)
            .compact()
            .with_filter(filter)
            .boxed()
    };
    let provider = match export {
        Some(service) => tracer_provider(service)?,
        None => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("arbiter"))
            .with_filter(filter_fn(|m| {
                if m.is_span() {
                    // Our spans (the server's and the MCP gateway's, also inside
                    // `serve`), the DEBUG ones of the request path included.
                    (m.target().starts_with("arbiter_server")
                        || m.target().starts_with("arbiter_mcp_gateway"))
                        && *m.level() <= Level::DEBUG
                } else {
                    // Events become span events; INFO and above is enough there.
                    *m.level() <= Level::INFO
                }
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OTLP trace pipeline, when the environment names a collector.
fn tracer_provider(service: &'static str) -> anyhow::Result<Option<SdkTracerProvider>> {
    use opentelemetry_otlp::WithTonicConfig as _;
    if env_set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env_set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    if env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && env_set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    // Only gRPC is built in. A collector's HTTP port would take every export as an
    // error, so a request for HTTP stops the start instead of losing traces quietly.
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env_set(var) {
            anyhow::ensure!(
                p == "grpc",
                "{var}={p}: arbiter exports traces over OTLP/gRPC only; set it to \"grpc\" \
                 and point the endpoint at the collector's gRPC port (usually 4317)"
            );
            break;
        }
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    // The exporter does not read the CA variable itself; without it an https endpoint
    // would have no roots to trust.
    if let Some(ca) = env_set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        .or_else(|| env_set("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    {
        let pem = std::fs::read(&ca)
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_CERTIFICATE: reading {ca}: {e}"))?;
        builder = builder.with_tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        );
    }
    let exporter = builder
        .build()
        .map_err(|e| anyhow::anyhow!("configuring the OTLP trace exporter: {e}"))?;
    let mut resource = Resource::builder();
    let named = env_set("OTEL_SERVICE_NAME").is_some()
        || env_set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The span for one gRPC call (tonic's `trace_fn`). A W3C `traceparent` from the
/// caller makes it a child of the caller's span. DEBUG: only the exporter wants it.
pub fn rpc_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = req.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or(("", path));
    let span = tracing::debug_span!(
        span::RPC,
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

struct Headers<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Puts `trace_id` and `span_id` of the current OpenTelemetry span first in each JSON
/// log line, so a log line leads to its trace.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                sc.trace_id(),
                sc.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod safe_log_tests {
    use super::safe_record;

    #[test]
    fn a_log_record_stays_one_record() {
        let text = "WARN error: bad \u{1b}[2J\nINFO forged record\u{202e}\n";
        assert_eq!(
            safe_record(false, text),
            "WARN error: bad \\u{1b}[2J\\u{a}INFO forged record\\u{202e}\n"
        );
        let json = serde_json::json!({"message": "x\u{202e}\u{1b}\ny"}).to_string() + "\n";
        let safe = safe_record(true, &json);
        assert_eq!(safe.lines().count(), 1);
        assert!(!safe.contains('\u{202e}'));
        let back: serde_json::Value = serde_json::from_str(safe.trim_end()).unwrap();
        assert_eq!(back["message"], "x\u{202e}\u{1b}\ny");
    }
}
