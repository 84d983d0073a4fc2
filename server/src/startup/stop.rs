//! What runs beside the RPCs until the end (the refusal auditor), and the stop order
//! once they have drained (ARCHITECTURE.md, "Shutdown").

use crate::config::Settings;
use crate::engine::Engine;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long the audit writer may take to commit its last batch at shutdown.
const BATCHER_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a clean stop waits for the store to checkpoint and close.
const STORE_CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// How long refusals still queued at the end may take to be audited.
const REFUSALS_DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// The authenticator the services check callers with, and the task that audits what
/// it refuses (off the request path, through a bounded queue).
pub(super) fn audit_refusals(
    engine: &Arc<Engine>,
    settings: &Settings,
    metrics: &Metrics,
) -> (crate::auth::Authenticator, JoinHandle<()>) {
    let (refusals, mut refused) =
        crate::auth::RefusalQueue::new(settings.dev.refusal_queue, metrics.refusals_dropped());
    let auditor = engine.clone();
    let task = tokio::spawn(async move {
        while let Some(queued) = refused.next().await {
            match queued {
                crate::auth::Queued::Refusal(r) => auditor.record_refusal(r).await,
                crate::auth::Queued::Dropped(n) => auditor.record_dropped_refusals(n).await,
            }
        }
    });
    let auth = crate::auth::Authenticator {
        book: engine.principal_book(),
        refusals,
    };
    (auth, task)
}

/// What is still running once the RPCs have drained.
pub(super) struct Parts {
    pub notifier: Option<crate::notify::Notifier>,
    pub background: Vec<JoinHandle<()>>,
    pub refusal_task: JoinHandle<()>,
    pub engine: Arc<Engine>,
    pub batcher_task: JoinHandle<()>,
}

/// Stops the rest in order: webhooks get a short drain, background tasks stop, queued
/// refusals are audited, the last heartbeats are stored, the audit writer commits what
/// is queued, and the store closes (SQLite: the WAL is truncated). Every answered
/// decision was already durable; the error says what an unclean stop may have lost.
pub(super) async fn after_serving(parts: Parts) -> anyhow::Result<()> {
    let Parts {
        notifier,
        background,
        mut refusal_task,
        engine,
        batcher_task,
    } = parts;
    if let Some(n) = notifier {
        n.stop().await;
    }
    for task in &background {
        task.abort();
    }
    // Refusals already queued are audited too ("every refusal is audited"): the
    // queue ends once the services holding its sender are gone. A connection cut
    // by the grace period may keep one alive, hence the bound.
    if tokio::time::timeout(REFUSALS_DRAIN_DEADLINE, &mut refusal_task)
        .await
        .is_err()
    {
        refusal_task.abort();
        let _ = refusal_task.await;
    }
    for task in background {
        let _ = task.await;
    }
    // Heartbeats received since the last sync, so a restart (or another replica)
    // does not lose them.
    if let Err(e) = engine.flush_presence().await {
        tracing::warn!(error = %e, "shutdown: the last heartbeats could not be stored");
    }
    engine.batcher().close();
    let store = engine.store().clone();
    drop(engine);
    // Bounded by the store's own timeouts in practice; the cap keeps a wedged
    // database from holding the process forever.
    let finished = tokio::time::timeout(BATCHER_STOP_DEADLINE, batcher_task).await;
    if matches!(finished, Ok(Ok(()))) {
        // A connection still borrowed by a background task would hold `close` (it
        // waits for the pool to drain); a clean stop must not hang on it.
        match tokio::time::timeout(STORE_CLOSE_DEADLINE, store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shutdown: the store did not close cleanly")
            }
            Err(_) => tracing::warn!("shutdown: the store did not close within 5 s"),
        }
    }
    match finished {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => anyhow::bail!("the audit writer failed while stopping: {e}"),
        Err(_) => anyhow::bail!(
            "the audit writer did not finish its last batch within {BATCHER_STOP_DEADLINE:?}; \
             unanswered requests may be missing from the log (answered ones are not)"
        ),
    }
}
