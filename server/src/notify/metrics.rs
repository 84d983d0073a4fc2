//! The notifier's instruments. `endpoint` label values are the configured endpoint
//! names, so the number of series is bounded by the configuration.

use crate::telemetry::metric as name;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Outcomes of one delivery attempt.
pub const OUTCOMES: [&str; 2] = ["delivered", "failed"];
/// Why an event was given up.
pub const DEAD_REASONS: [&str; 2] = ["retries_exhausted", "queue_full"];

#[derive(Clone)]
pub struct NotifyMetrics {
    deliveries: IntCounterVec,
    dead: IntCounterVec,
    depth: IntGaugeVec,
    pub log_lags: IntCounter,
}

/// One endpoint's resolved series.
#[derive(Clone)]
pub struct EndpointMetrics {
    pub delivered: IntCounter,
    pub failed: IntCounter,
    pub dead_retries: IntCounter,
    pub dead_queue_full: IntCounter,
    pub depth: IntGauge,
}

impl NotifyMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                name::WEBHOOK_DELIVERIES,
                "Webhook delivery attempts by endpoint and outcome (delivered: a 2xx answer; failed: anything else, retried).",
            ),
            &["endpoint", "outcome"],
        )?;
        let dead = IntCounterVec::new(
            Opts::new(
                name::WEBHOOK_DEAD_LETTERS,
                "Webhook events given up, by endpoint and reason (retries_exhausted: retry window or attempt cap reached; queue_full: the endpoint's queue was full).",
            ),
            &["endpoint", "reason"],
        )?;
        let depth = IntGaugeVec::new(
            Opts::new(
                name::WEBHOOK_QUEUE_DEPTH,
                "Webhook events waiting for delivery, by endpoint.",
            ),
            &["endpoint"],
        )?;
        let log_lags = IntCounter::new(
            name::WEBHOOK_LOG_LAGS,
            "Times the notifier fell behind the audit broadcast and read the missed entries back from the store.",
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(dead.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(log_lags.clone()))?;
        Ok(Self {
            deliveries,
            dead,
            depth,
            log_lags,
        })
    }

    /// Resolves (and so shows at zero) every series of one endpoint.
    pub fn endpoint(&self, endpoint: &str) -> prometheus::Result<EndpointMetrics> {
        Ok(EndpointMetrics {
            delivered: self
                .deliveries
                .get_metric_with_label_values(&[endpoint, OUTCOMES[0]])?,
            failed: self
                .deliveries
                .get_metric_with_label_values(&[endpoint, OUTCOMES[1]])?,
            dead_retries: self
                .dead
                .get_metric_with_label_values(&[endpoint, DEAD_REASONS[0]])?,
            dead_queue_full: self
                .dead
                .get_metric_with_label_values(&[endpoint, DEAD_REASONS[1]])?,
            depth: self.depth.get_metric_with_label_values(&[endpoint])?,
        })
    }
}
