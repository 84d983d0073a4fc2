//! Prometheus metrics and the HTTP endpoint that serves them (`metrics.listen`).
//!
//! Every labelled series is registered once, at start, and the request path holds the
//! resolved handles: recording a decision is an index into an array and two atomic
//! adds, with no lock and no map lookup. Label values come from fixed lists (outcomes,
//! stages, results), never from request data, so the number of series is bounded.
//! Gauges that describe state (pending approvals, halts, reservations, the pool) are
//! read when Prometheus scrapes, not kept up to date on every change.

use crate::pipeline::{Reason, Verdict};
use crate::store::PoolStats;
use crate::telemetry::metric as name;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Duration;

/// `outcome` label values of the decision metrics; `error` is an Evaluate that could
/// not decide (the caller got UNAVAILABLE and fails closed).
pub const OUTCOMES: [&str; 4] = ["allow", "deny", "pending_approval", "error"];
/// `stage` label values: the stage that decided (the first failing one, `approval` for
/// a pending decision), or `none` when every stage passed.
pub const STAGES: [&str; 7] = [
    "none", "halt", "trust", "budget", "consent", "scope", "approval",
];

/// Latency buckets for RPC-scale durations, 100 µs to 5 s.
const SECONDS_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Entries per group commit, 1 to the largest `audit.max_batch`.
const BATCH_BUCKETS: [f64; 15] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    10000.0,
];

/// The audit writer's instruments. The default is a set that is registered nowhere
/// (benchmarks and tools that start a batcher without an endpoint).
#[derive(Clone)]
pub struct AuditMetrics {
    pub batch_entries: Histogram,
    pub commit_seconds: Histogram,
    pub commit_failures: IntCounter,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self::new().expect("static metric definitions are valid")
    }
}

impl AuditMetrics {
    fn new() -> prometheus::Result<Self> {
        Ok(Self {
            batch_entries: Histogram::with_opts(
                HistogramOpts::new(
                    name::AUDIT_BATCH_ENTRIES,
                    "Audit entries written per group commit.",
                )
                .buckets(BATCH_BUCKETS.to_vec()),
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    name::AUDIT_COMMIT_SECONDS,
                    "Time to write one audit batch durably (one database transaction).",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
            )?,
            commit_failures: IntCounter::new(
                name::AUDIT_COMMIT_FAILURES,
                "Audit batches whose commit failed (their requests were answered UNAVAILABLE).",
            )?,
        })
    }
}

/// Cheap to clone; the API services and background tasks each hold one.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// `OUTCOMES.len() * STAGES.len()` resolved series, outcome-major.
    decisions: Vec<IntCounter>,
    decision_seconds: Vec<Histogram>,
    audit: AuditMetrics,
    audit_head: IntGauge,
    audit_queue: IntGauge,
    pending_approvals: IntGauge,
    active_halts: IntGauge,
    open_reservations: IntGauge,
    pool: IntGaugeVec,
    pool_max: IntGauge,
    policy_accepted: IntCounter,
    policy_rejected: IntCounter,
    refusals_dropped: IntCounter,
    rpc: RpcMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::build().expect("static metric definitions are valid and distinct")
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                name::DECISIONS,
                "Evaluate decisions by outcome and deciding stage.",
            ),
            &["outcome", "stage"],
        )?;
        let seconds_vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                name::DECISION_SECONDS,
                "Evaluate latency inside the server, audit commit included, by outcome and deciding stage.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["outcome", "stage"],
        )?;
        let mut decisions = Vec::with_capacity(OUTCOMES.len() * STAGES.len());
        let mut decision_seconds = Vec::with_capacity(OUTCOMES.len() * STAGES.len());
        for outcome in OUTCOMES {
            for stage in STAGES {
                decisions.push(decisions_vec.get_metric_with_label_values(&[outcome, stage])?);
                decision_seconds.push(seconds_vec.get_metric_with_label_values(&[outcome, stage])?);
            }
        }
        registry.register(Box::new(decisions_vec))?;
        registry.register(Box::new(seconds_vec))?;

        let audit = AuditMetrics::new()?;
        registry.register(Box::new(audit.batch_entries.clone()))?;
        registry.register(Box::new(audit.commit_seconds.clone()))?;
        registry.register(Box::new(audit.commit_failures.clone()))?;

        let gauge = |n: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(n, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let audit_head = gauge(
            name::AUDIT_HEAD_SEQ,
            "Highest durable audit sequence number.",
        )?;
        let audit_queue = gauge(
            name::AUDIT_QUEUE_DEPTH,
            "Audit entries waiting for the writer's next group commit.",
        )?;
        let pending_approvals = gauge(
            name::APPROVALS_PENDING,
            "Approval requests waiting for a human.",
        )?;
        let active_halts = gauge(name::HALTS_ACTIVE, "Halts (kill switches) in force.")?;
        let open_reservations = gauge(
            name::RESERVATIONS_OPEN,
            "Budget reservations held by decisions not yet recorded or expired.",
        )?;
        let pool_max = gauge(
            name::DB_POOL_MAX,
            "Upper bound of the database connection pool.",
        )?;
        let pool = IntGaugeVec::new(
            Opts::new(
                name::DB_POOL_CONNECTIONS,
                "Open database connections by state (idle or in_use).",
            ),
            &["state"],
        )?;
        registry.register(Box::new(pool.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                name::POLICY_RELOADS,
                "Policy bundle changes seen on disk, by result (accepted or rejected).",
            ),
            &["result"],
        )?;
        let policy_accepted = reloads.get_metric_with_label_values(&["accepted"])?;
        let policy_rejected = reloads.get_metric_with_label_values(&["rejected"])?;
        registry.register(Box::new(reloads))?;
        let refusals_dropped = IntCounter::new(
            name::AUTH_REFUSALS_DROPPED,
            "Unauthenticated refusals that found the audit queue full: audited in a summary auth.denied entry (`dropped`), not one by one.",
        )?;
        registry.register(Box::new(refusals_dropped.clone()))?;
        let rpc = RpcMetrics::new(&registry)?;

        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                decisions,
                decision_seconds,
                audit,
                audit_head,
                audit_queue,
                pending_approvals,
                active_halts,
                open_reservations,
                pool,
                pool_max,
                policy_accepted,
                policy_rejected,
                refusals_dropped,
                rpc,
            }),
        })
    }

    /// Where subsystems with their own instruments (the notifier) register them.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The audit writer's instruments, registered here.
    pub fn audit(&self) -> AuditMetrics {
        self.inner.audit.clone()
    }

    /// The counter of refusals the interceptor's queue could not take
    /// (`auth::RefusalQueue` increments it).
    pub fn refusals_dropped(&self) -> IntCounter {
        self.inner.refusals_dropped.clone()
    }

    /// Counts one Evaluate and its latency. `decision` is `None` when it could not
    /// decide (UNAVAILABLE).
    pub fn record_decision(&self, decision: Option<(Verdict, &[Reason])>, elapsed: Duration) {
        let (outcome, stage) = match decision {
            None => (3, 0),
            Some((Verdict::Allow, _)) => (0, 0),
            Some((Verdict::PendingApproval, _)) => (2, 6),
            Some((Verdict::Deny, reasons)) => (
                1,
                reasons
                    .iter()
                    .find(|r| !r.passed)
                    .map_or(0, |r| stage_index(&r.stage)),
            ),
        };
        let i = outcome * STAGES.len() + stage;
        self.inner.decisions[i].inc();
        self.inner.decision_seconds[i].observe(elapsed.as_secs_f64());
    }

    pub fn record_policy_reload(&self, accepted: bool) {
        if accepted {
            self.inner.policy_accepted.inc();
        } else {
            self.inner.policy_rejected.inc();
        }
    }

    /// Sets the state gauges from `state` and renders every metric in the Prometheus
    /// text format.
    pub fn render(&self, state: &StateReading) -> String {
        let i = &self.inner;
        i.pending_approvals.set(saturate(state.pending_approvals));
        i.active_halts.set(saturate(state.active_halts));
        i.open_reservations.set(saturate(state.open_reservations));
        i.audit_head
            .set(i64::try_from(state.audit_head).unwrap_or(i64::MAX));
        i.audit_queue.set(saturate(state.audit_queue));
        if let Some(p) = state.pool {
            i.pool.with_label_values(&["idle"]).set(i64::from(p.idle));
            i.pool
                .with_label_values(&["in_use"])
                .set(i64::from(p.size.saturating_sub(p.idle)));
            i.pool_max.set(i64::from(p.max));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&i.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn saturate(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn stage_index(stage: &str) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Point-in-time readings of run-time state, taken when Prometheus scrapes. The caller
/// (startup) reads them from the engine, so this module renders numbers and knows
/// nothing of where they live.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateReading {
    pub pending_approvals: usize,
    pub active_halts: usize,
    pub open_reservations: usize,
    /// The newest durable audit sequence number.
    pub audit_head: u64,
    /// Entries waiting for the audit writer.
    pub audit_queue: usize,
    /// The database pool, for backends that have one.
    pub pool: Option<PoolStats>,
}

/// Serves `GET /metrics` on `listener` until the task is aborted; `read` takes the
/// state readings on each scrape.
pub async fn serve<F>(listener: tokio::net::TcpListener, metrics: Metrics, read: F)
where
    F: Fn() -> StateReading + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&read());
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    body,
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_is_counted_under_its_first_failing_stage() {
        let m = Metrics::new();
        let reasons = vec![
            Reason::pass("halt", "ok", ""),
            Reason::fail("budget", "budget.exceeded", ""),
            Reason::fail("scope", "scope.denied", ""),
        ];
        m.record_decision(Some((Verdict::Deny, &reasons)), Duration::from_micros(300));
        m.record_decision(Some((Verdict::Allow, &[])), Duration::from_micros(300));
        m.record_decision(None, Duration::from_micros(300));
        let families = m.inner.registry.gather();
        let decisions = families
            .iter()
            .find(|f| f.name() == name::DECISIONS)
            .expect("registered");
        let count = |outcome: &str, stage: &str| {
            decisions
                .get_metric()
                .iter()
                .find(|s| {
                    let l = s.get_label();
                    l.iter()
                        .any(|p| p.name() == "outcome" && p.value() == outcome)
                        && l.iter().any(|p| p.name() == "stage" && p.value() == stage)
                })
                .map(|s| s.get_counter().get_value() as u64)
        };
        assert_eq!(count("deny", "budget"), Some(1));
        assert_eq!(count("deny", "scope"), Some(0));
        assert_eq!(count("allow", "none"), Some(1));
        assert_eq!(count("error", "none"), Some(1));
        // Every combination is pre-registered, so a scrape shows zeros too.
        assert_eq!(decisions.get_metric().len(), OUTCOMES.len() * STAGES.len());
    }
}

/// gRPC status codes 0–16, as the `code` label spells them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Per-RPC counts and latency. `method` is one of the methods the server serves (read
/// from the descriptor sets at start) or `other`, so a client inventing paths cannot
/// add series. Series are resolved on first use and then kept: after that a record is
/// a map read (immutable) and atomic adds.
pub struct RpcMetrics {
    /// Path (`/pkg.Service/Method`) → index into `cells`.
    methods: std::collections::HashMap<String, usize>,
    labels: Vec<String>,
    requests: IntCounterVec,
    seconds: prometheus::HistogramVec,
    cells: Vec<RpcCells>,
}

#[derive(Default)]
struct RpcCells {
    codes: [std::sync::OnceLock<IntCounter>; 17],
    seconds: std::sync::OnceLock<Histogram>,
}

impl RpcMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(name::GRPC_REQUESTS, "gRPC calls by method and status code."),
            &["method", "code"],
        )?;
        let seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                name::GRPC_SECONDS,
                "Time to the response headers of a gRPC call (a unary call's whole handling; a stream's opening).",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        let mut labels = served_methods();
        labels.push("other".to_owned());
        let methods = labels
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("/{m}"), i))
            .collect();
        let cells = labels.iter().map(|_| RpcCells::default()).collect();
        Ok(Self {
            methods,
            labels,
            requests,
            seconds,
            cells,
        })
    }

    /// The index of a request path's `method` label (`other` when not served).
    fn method_index(&self, path: &str) -> usize {
        self.methods
            .get(path)
            .copied()
            .unwrap_or(self.labels.len() - 1)
    }

    fn record(&self, i: usize, code: usize, elapsed: Duration) {
        let method = self.labels[i].as_str();
        let cells = &self.cells[i];
        cells.codes[code.min(16)]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[method, GRPC_CODES[code.min(16)]])
            })
            .inc();
        cells
            .seconds
            .get_or_init(|| self.seconds.with_label_values(&[method]))
            .observe(elapsed.as_secs_f64());
    }
}

/// `pkg.Service/Method` for every method of the arbiter.v1 services and grpc.health.v1.
fn served_methods() -> Vec<String> {
    use prost::Message;
    let mut out = Vec::new();
    for set in [
        arbiter_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    out
}

/// Tower layer that records [`RpcMetrics`] for every call (tonic's `Server::layer`).
#[derive(Clone)]
pub struct RpcLayer(pub Metrics);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Metrics,
}

type Http<T> = tonic::codegen::http::Request<T>;
type HttpResponse<T> = tonic::codegen::http::Response<T>;

impl<S, B, R> tower::Service<Http<B>> for RpcService<S>
where
    S: tower::Service<Http<B>, Response = HttpResponse<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Http<B>) -> Self::Future {
        let started = std::time::Instant::now();
        let method = self.metrics.inner.rpc.method_index(req.uri().path());
        let metrics = self.metrics.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            // An error status travels in the headers (trailers-only response); a
            // success's status comes in trailers after the body, and is OK for a
            // unary call. A stream that fails later is counted as opened OK.
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                    .unwrap_or(if resp.status().is_success() { 0 } else { 2 }),
                Err(_) => 2,
            };
            metrics.inner.rpc.record(method, code, started.elapsed());
            result
        })
    }
}
