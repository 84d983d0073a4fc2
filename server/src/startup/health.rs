//! grpc.health.v1: SERVING only while the database answers and audit commits succeed.

use crate::engine::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

/// Service names reported by grpc.health.v1 (plus "" for the whole server).
pub(super) const HEALTH_SERVICES: [&str; 5] = [
    "",
    "arbiter.v1.DecisionService",
    "arbiter.v1.ControlService",
    "arbiter.v1.AdminService",
    "arbiter.v1.AuditService",
];

/// Turns every service NOT_SERVING (shutdown begins).
pub(super) async fn not_serving(health: &tonic_health::server::HealthReporter) {
    for name in HEALTH_SERVICES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// Checks the store and the audit writer every 500 ms and reports what it finds.
pub(super) fn spawn_monitor(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        // Whether NOT_SERVING was reported for a failed commit or a failed ping.
        let mut failed = false;
        loop {
            let ping = engine.store().ping().await.is_ok();
            if ping && failed && !*engine.batcher().healthy().borrow() {
                // The database answers again (after an outage or a failed commit that was
                // reported for at least one round). Answering a read is not enough (a full
                // disk still does): only a write that commits clears the failure, so
                // health stays NOT_SERVING while commits fail and recovers without a
                // restart once they can succeed.
                match engine.store().probe_write().await {
                    Ok(()) => engine.batcher().clear_failure(),
                    Err(e) => tracing::debug!(error = %e, "write probe failed; still NOT_SERVING"),
                }
            }
            let ok = ping && *engine.batcher().healthy().borrow();
            failed = !ok;
            if last != Some(ok) {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                // The whole server ("") last: once it reports a status, every
                // service does too (a probe that waits for "" may check the others).
                for name in HEALTH_SERVICES.iter().rev() {
                    health.set_service_status(*name, status).await;
                }
                if !ok {
                    tracing::error!(
                        "health: NOT_SERVING (database unreachable or audit commits failing)"
                    );
                }
                last = Some(ok);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
