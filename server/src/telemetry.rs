//! Logging setup and the names of spans and attributes.

use tracing_subscriber::{fmt, EnvFilter};

pub const ATTR_AGENT_ID: &str = "arbiter.agent_id";
pub const ATTR_DECISION: &str = "arbiter.decision";

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
