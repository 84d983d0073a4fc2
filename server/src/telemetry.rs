//! Logging setup and the names of spans and attributes.

use tracing_subscriber::{fmt, EnvFilter};

pub const ATTR_AGENT_ID: &str = "arbiter.agent_id";
pub const ATTR_DECISION: &str = "arbiter.decision";

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
}

/// Installs the global subscriber once. Logs go to stderr: JSON when
/// `ARBITER_LOG_FORMAT=json`, human-readable otherwise. `RUST_LOG` filters.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("ARBITER_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
