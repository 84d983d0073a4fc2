//! Traces: every `tools/call` is a span that joins the MCP client's trace and is the
//! parent of what the call costs elsewhere (Arbiter's RPC spans, the upstream's work).
//!
//! The client's W3C trace context comes from the request's `_meta` (`traceparent`,
//! `tracestate`: SEP-414, what the official SDKs send), else from the HTTP
//! `traceparent`/`tracestate` headers. It is untrusted text that only names a trace:
//! it is parsed by OpenTelemetry's own propagator (anything malformed is dropped) and
//! never decides anything. The span exports only when the process exports traces
//! (telemetry in `arbiter`); without an exporter the client's context is passed on
//! unchanged, so Arbiter's spans still join the client's trace.

use axum::http::request::Parts;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rmcp::service::{RequestContext, RoleServer};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The W3C trace context a call passes on, as the two header values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The client's trace context for one request: `_meta` first (it belongs to this very
/// request), else the HTTP headers of the POST that carried it.
pub fn incoming(ctx: &RequestContext<RoleServer>) -> Context {
    let mut carrier = HashMap::new();
    if let Some(tp) = ctx.meta.get_traceparent() {
        carrier.insert(TRACEPARENT.to_owned(), tp.to_owned());
        if let Some(ts) = ctx.meta.get_tracestate() {
            carrier.insert(TRACESTATE.to_owned(), ts.to_owned());
        }
    } else if let Some(parts) = ctx.extensions.get::<Parts>() {
        carrier = from_headers(&parts.headers);
    }
    extract(&carrier)
}

/// The trace context in HTTP headers (the Claude Code and Docker hooks, whose bodies
/// are not MCP requests).
pub fn from_headers(headers: &axum::http::HeaderMap) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    for key in [TRACEPARENT, TRACESTATE] {
        if let Some(v) = headers.get(key).and_then(|v| v.to_str().ok()) {
            carrier.insert(key.to_owned(), v.to_owned());
        }
    }
    carrier
}

/// A valid remote context, or the empty one (a malformed `traceparent` starts a new trace).
pub fn extract(carrier: &HashMap<String, String>) -> Context {
    let cx = TraceContextPropagator::new().extract(carrier);
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::new()
    }
}

/// The span of one `tools/call`, named as OpenTelemetry's MCP conventions name a
/// server span (`tools/call <tool>`), child of the client's span when it sent one.
/// DEBUG, like the server's request spans: only the trace exporter asks for it.
pub fn call_span(tool: &str, parent: &Context) -> tracing::Span {
    let span = tracing::debug_span!(
        "tools/call",
        otel.name = %format!("tools/call {tool}"),
        otel.kind = "server",
        mcp.method.name = "tools/call",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %tool,
        arbiter.agent_id = tracing::field::Empty,
        arbiter.decision = tracing::field::Empty,
    );
    if parent.span().span_context().is_valid() {
        // Fails only when no exporter listens (span disabled): nothing to join then.
        let _ = span.set_parent(parent.clone());
    }
    span
}

/// What to pass on to Arbiter and the upstream: the call span's own context when it is
/// recorded, else the client's context unchanged, else nothing.
pub fn outgoing(span: &tracing::Span, parent: &Context) -> Option<TraceContext> {
    let own = span.context();
    let cx = if own.span().span_context().is_valid() {
        own
    } else {
        parent.clone()
    };
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(TraceContext {
        traceparent: carrier.remove(TRACEPARENT)?,
        tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(tp: &str, ts: Option<&str>) -> HashMap<String, String> {
        let mut c = HashMap::from([(TRACEPARENT.to_owned(), tp.to_owned())]);
        if let Some(ts) = ts {
            c.insert(TRACESTATE.to_owned(), ts.to_owned());
        }
        c
    }

    #[test]
    fn without_an_exporter_the_clients_context_is_passed_on_unchanged() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = extract(&carrier(tp, Some("vendor=x")));
        let passed = outgoing(&tracing::Span::none(), &parent).unwrap();
        assert_eq!(passed.traceparent, tp);
        assert_eq!(passed.tracestate.as_deref(), Some("vendor=x"));
    }

    #[test]
    fn a_malformed_traceparent_is_dropped() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx",
        ] {
            let parent = extract(&carrier(bad, None));
            assert!(
                outgoing(&tracing::Span::none(), &parent).is_none(),
                "{bad:?}"
            );
        }
    }
}
