//! Prometheus metrics per upstream, served at `GET /metrics` on `metrics.listen`.
//! Label values come from fixed lists and the configured upstream names, never from
//! request data (a tool name would let a client grow the series without bound).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// How a `tools/call` for an upstream ended, as the `outcome` label.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Allowed and forwarded (whatever the upstream answered).
    Forwarded,
    Denied,
    Halted,
    /// Held for a human and not granted in time.
    Pending,
    /// Arbiter could not decide; not forwarded.
    Undecided,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Denied => "denied",
            Outcome::Halted => "halted",
            Outcome::Pending => "pending",
            Outcome::Undecided => "undecided",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    upstream_seconds: HistogramVec,
    upstream_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        Self::build().expect("static metric definitions are valid")
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new(
                "arbiter_mcp_tool_calls_total",
                "tools/call requests by upstream and how they ended",
            ),
            &["upstream", "outcome"],
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "arbiter_mcp_upstream_call_seconds",
                "Latency of forwarded tools/call requests at the upstream",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "arbiter_mcp_upstream_errors_total",
                "Forwarded calls the upstream did not answer (timeout, failure, not connected)",
            ),
            &["upstream", "kind"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        Ok(Self {
            registry,
            calls,
            upstream_seconds,
            upstream_errors,
        })
    }

    pub fn call(&self, upstream: &str, outcome: Outcome) {
        self.calls
            .with_label_values(&[upstream, outcome.label()])
            .inc();
    }

    pub fn upstream_call(&self, upstream: &str, seconds: f64, error: Option<&'static str>) {
        self.upstream_seconds
            .with_label_values(&[upstream])
            .observe(seconds);
        if let Some(kind) = error {
            self.upstream_errors
                .with_label_values(&[upstream, kind])
                .inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
