//! The engine's own loops: everything that keeps run-time state true between requests
//! (store maintenance, the watchdog, presence, approval expiry, other replicas' control
//! changes and log head, pruning). `startup` spawns them once and aborts them at stop;
//! the loops that bridge to something outside the engine (the policy file, the health
//! reporter, the metrics endpoint) stay at that edge.

use super::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the store's maintenance runs (SQLite: the WAL checkpoint). Short, because
/// under sustained load the writer appends tens of MiB of WAL per second and the bound
/// on the WAL is only as good as how soon a checkpoint notices it.
const STORE_MAINTENANCE_EVERY: Duration = Duration::from_millis(100);
/// How often the watchdog judges silence and expired approvals are closed.
const WATCHDOG_EVERY: Duration = Duration::from_millis(500);
/// How often heartbeats are written to the store and, with several replicas, read back.
const PRESENCE_SYNC: Duration = Duration::from_millis(250);
/// How often in-memory windows (replay answers, loop ticks) are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Starts every loop the engine needs; the caller owns the handles.
pub fn spawn_loops(engine: &Arc<Engine>) -> Vec<JoinHandle<()>> {
    let mut loops = vec![
        every(engine, STORE_MAINTENANCE_EVERY, |e| async move {
            if let Err(err) = e.store.maintain().await {
                tracing::warn!(error = %err, "store maintenance failed");
            }
        }),
        // With several replicas on one database only the lease holder (an advisory
        // lock) judges silence and expires approvals; the embedded store's one server
        // always leads (`Engine::leads`).
        every(
            engine,
            WATCHDOG_EVERY,
            |e| async move { e.watchdog().await },
        ),
        every(engine, WATCHDOG_EVERY, |e| async move {
            if e.leads("approval-expiry").await {
                e.expire_approvals().await;
            }
        }),
        every(engine, PRUNE_EVERY, |e| async move {
            e.prune();
            e.prune_loop_ticks().await;
        }),
        spawn_presence_sync(engine.clone()),
    ];
    // Without `replicated()` this server is the one writer: every change is made here
    // and reaches followers through the batcher's broadcast, so there is nothing to pick
    // up from the database.
    if let Some(replicated) = engine.store.replicated() {
        loops.push(spawn_control_refresh(
            engine.clone(),
            replicated.watch_changes(),
        ));
        // TailAudit followers hear what other replicas commit (engine::tail).
        let follower = engine.clone();
        loops.push(tokio::spawn(async move { follower.watch_log_head().await }));
    }
    loops
}

/// Runs `step` every `period`, the first time at once.
fn every<F, Fut>(engine: &Arc<Engine>, period: Duration, step: F) -> JoinHandle<()>
where
    F: Fn(Arc<Engine>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            step(engine.clone()).await;
        }
    })
}

/// Writes the heartbeats received here to the store (one upsert per run, never one per
/// heartbeat: they are not audited and stay off the request path) and takes in those
/// other replicas received, so the watchdog and ListAgents see every replica's.
fn spawn_presence_sync(engine: Arc<Engine>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRESENCE_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match engine.sync_presence().await {
                // Once per outage, not four times a second.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot sync presence with the store; retrying");
                    failing = true;
                }
                Err(_) => {}
                Ok(()) if failing => {
                    tracing::info!("presence syncs with the store again");
                    failing = false;
                }
                Ok(()) => {}
            }
        }
    })
}

/// Applies control changes committed by other replicas: on every NOTIFY, and at least
/// once a second as a safety net for notifications lost with a connection.
fn spawn_control_refresh(
    engine: Arc<Engine>,
    mut changes: tokio::sync::mpsc::Receiver<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut retry = false;
        loop {
            let wait = if retry {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(1)
            };
            if let Ok(None) = tokio::time::timeout(wait, changes.recv()).await {
                // The listener is gone: fall back to the periodic re-check alone.
                tokio::time::sleep(wait).await;
            }
            retry = match engine.refresh_control().await {
                Ok(applied) => !applied,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read control state; retrying");
                    false
                }
            };
        }
    })
}
