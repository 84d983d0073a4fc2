//! Outbound webhooks (docs/operations.md, "Webhooks"). A subscriber of committed audit
//! entries, never a step on the decision path:
//!
//! ```text
//! audit log ──follow_log (broadcast, else the store by seq)──► dispatcher ──try_send──► queue per endpoint ──► worker ──POST──► receiver
//! ```
//!
//! The dispatcher follows the log from the delivery cursor (`cursor`), turns entries
//! into events (`event`, `budget`), and hands each to the bounded queue of every
//! endpoint that wants it without ever waiting: a full queue is a dead letter, counted.
//! Workers (`deliver`) sign (`sign`) and POST the endpoint's format (`payload`) with
//! retries. Delivery is at-least-once; the `webhook-id` is stable per event. With
//! several replicas on one database only the holder of the notifier lease delivers
//! (`lease`), and the cursor lives in the database.

pub mod budget;
pub mod cursor;
pub mod deliver;
pub mod event;
pub mod lease;
pub mod metrics;
pub mod payload;
pub mod settings;
pub mod sign;

use crate::engine::Engine;
use crate::store::AuditQuery;
use cursor::{CursorFile, Progress};
use event::{Event, EventType};
use lease::Lease;
use metrics::{EndpointMetrics, NotifyMetrics};
use settings::{Endpoint, NotificationSettings};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often the cursor file is rewritten when it moved.
const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// Wait before following the log again after a store error.
const RESUME_AFTER: Duration = Duration::from_secs(1);
/// How often a replica without the notifier lease asks for it, and the holder checks
/// it still has it.
const LEASE_POLL: Duration = Duration::from_secs(1);

/// Where the delivery cursor is kept: a file (one server), or the database while this
/// replica holds the notifier lease (several replicas on one database).
#[derive(Clone)]
enum CursorHome {
    File(Arc<CursorFile>),
    Shared(Arc<Lease>),
}

impl CursorHome {
    /// Stores `seq`; with a lease, only while this replica holds it (a replica that
    /// lost it must not move the cursor the new holder follows).
    async fn save(&self, seq: u64) -> Result<(), String> {
        match self {
            Self::File(f) => f
                .write(seq)
                .map_err(|e| format!("{}: {e}", f.path().display())),
            Self::Shared(l) if l.held() => l.save(seq).await.map_err(|e| e.to_string()),
            Self::Shared(_) => Ok(()),
        }
    }
}

pub struct Notifier {
    dispatcher: JoinHandle<()>,
    keeper: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    progress: Arc<Progress>,
    cursor: CursorHome,
    drain: Duration,
}

struct Route {
    endpoint: Endpoint,
    queue: mpsc::Sender<Event>,
    metrics: EndpointMetrics,
}

impl Notifier {
    /// Starts the workers and the dispatcher, or returns None without endpoints.
    /// `cursor_file` is where the delivery cursor lives on a single server; `lease`
    /// (several replicas on one database) makes delivery one replica's job at a time.
    pub async fn start(
        engine: Arc<Engine>,
        settings: &NotificationSettings,
        cursor_file: PathBuf,
        lease: Option<Lease>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Option<Self>> {
        let endpoints = settings.endpoints().map_err(anyhow::Error::msg)?;
        if endpoints.is_empty() {
            return Ok(None);
        }
        let m = NotifyMetrics::register(registry)?;
        let console_url = match &settings.console_url {
            Some(u) => Some(url::Url::parse(u)?),
            None => None,
        };
        let cursor = CursorFile::new(cursor_file);
        let head = engine.audit_log().head().await?.map_or(0, |(s, _)| s);
        let start = match cursor.read().map_err(anyhow::Error::msg)? {
            Some(seq) if seq <= head => seq,
            Some(seq) => {
                tracing::warn!(cursor = seq, head, path = %cursor.path().display(),
                    "the webhook cursor is past the log's head (another database?); starting at the head");
                head
            }
            // First start: the log's history is not announced.
            None => head,
        };
        let progress = Arc::new(Progress::starting_at(start));
        let retry = deliver::RetryPolicy::from_settings(settings);
        let mut routes = Vec::new();
        let mut workers = Vec::new();
        for endpoint in endpoints {
            let (tx, rx) = mpsc::channel(settings.queue);
            let em = m.endpoint(&endpoint.name)?;
            let worker = deliver::Worker {
                client: deliver::client(&endpoint)
                    .map_err(|e| e.context(format!("notifications endpoint {}", endpoint.name)))?,
                endpoint: endpoint.clone(),
                queue: rx,
                metrics: em.clone(),
                retry,
                console_url: console_url.clone(),
                progress: progress.clone(),
            };
            tracing::info!(endpoint = %endpoint.name, url = %endpoint.url, format = ?endpoint.format,
                "webhook endpoint configured");
            workers.push(tokio::spawn(worker.run()));
            routes.push(Route {
                endpoint,
                queue: tx,
                metrics: em,
            });
        }
        let lease = lease.map(Arc::new);
        let home = match &lease {
            Some(l) => CursorHome::Shared(l.clone()),
            None => CursorHome::File(Arc::new(cursor)),
        };
        let dispatcher = Dispatcher {
            engine,
            routes,
            budgets: budget::BudgetWatch::new(&settings.budget_shares),
            progress: progress.clone(),
            lags: m.log_lags.clone(),
            lease,
        };
        tracing::info!(after_seq = start, "notifier following the audit log");
        let dispatcher = tokio::spawn(dispatcher.run());
        let keeper = tokio::spawn(keep_cursor(progress.clone(), home.clone()));
        Ok(Some(Self {
            dispatcher,
            keeper,
            workers,
            progress,
            cursor: home,
            drain: Duration::from_millis(settings.drain_ms),
        }))
    }

    /// Stops taking entries, lets the workers deliver what is queued for at most
    /// `notifications.drain_ms`, then stops them and stores the cursor: events still
    /// undelivered are sent again after a restart.
    pub async fn stop(self) {
        self.keeper.abort();
        let _ = self.keeper.await;
        self.dispatcher.abort();
        let _ = self.dispatcher.await;
        // The dispatcher held the queues' senders: each worker ends once its queue is empty.
        let mut workers = self.workers;
        let drained = tokio::time::timeout(self.drain, async {
            for w in &mut workers {
                let _ = w.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                drain_ms = self.drain.as_millis() as u64,
                "shutdown: webhooks still undelivered; they are sent again after a restart"
            );
        }
        for w in &workers {
            w.abort();
        }
        let safe = self.progress.safe();
        if let Err(e) = self.cursor.save(safe).await {
            tracing::warn!(error = %e, "shutdown: cannot write the webhook cursor");
        }
    }
}

/// Stores the cursor whenever it moved.
async fn keep_cursor(progress: Arc<Progress>, home: CursorHome) {
    let mut written = None;
    let mut tick = tokio::time::interval(CURSOR_EVERY);
    loop {
        tick.tick().await;
        let safe = progress.safe();
        if written != Some(safe) {
            match home.save(safe).await {
                Ok(()) => written = Some(safe),
                Err(e) => tracing::warn!(error = %e, "cannot write the webhook cursor; will retry"),
            }
        }
    }
}

struct Dispatcher {
    engine: Arc<Engine>,
    routes: Vec<Route>,
    budgets: budget::BudgetWatch,
    progress: Arc<Progress>,
    lags: prometheus::IntCounter,
    /// Several replicas on one database: deliver only while holding it.
    lease: Option<Arc<Lease>>,
}

impl Dispatcher {
    async fn run(mut self) {
        let q = AuditQuery {
            kinds: event::SOURCE_KINDS.map(String::from).to_vec(),
            ..Default::default()
        };
        loop {
            if !self.take_turn().await {
                tokio::time::sleep(LEASE_POLL).await;
                continue;
            }
            let after = self.progress.last_examined();
            let follow = self
                .engine
                .follow_log_counted(q.clone(), Some(after), Some(self.lags.clone()))
                .await;
            match follow {
                Ok(entries) => self.deliver_while_leading(entries).await,
                Err(e) => {
                    tracing::warn!(error = %e, "notifier cannot follow the audit log; will retry")
                }
            }
            tokio::time::sleep(RESUME_AFTER).await;
        }
    }

    /// Whether this replica delivers now: always on a single server; with a lease once
    /// it holds it, resuming where the previous holder stopped.
    async fn take_turn(&self) -> bool {
        let Some(lease) = &self.lease else {
            return true;
        };
        let was = lease.held();
        if !lease.hold().await {
            return false;
        }
        if !was {
            match lease.cursor().await {
                Ok(Some(seq)) => self.progress.resume_after(seq),
                // No replica delivered yet: from where this one started.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "notifier cannot read the shared cursor; will retry");
                    return false;
                }
            }
        }
        true
    }

    /// Turns followed entries into events until the stream ends or the lease is lost.
    async fn deliver_while_leading(
        &mut self,
        mut entries: mpsc::Receiver<Result<crate::audit::SealedEntry, crate::store::StoreError>>,
    ) {
        let budgets_wanted = self
            .routes
            .iter()
            .any(|r| r.endpoint.wants(EventType::BudgetThreshold));
        let mut check = tokio::time::interval(LEASE_POLL);
        check.tick().await;
        loop {
            tokio::select! {
                next = entries.recv() => match next {
                    Some(Ok(entry)) => {
                        let mut events = event::from_entry(&entry);
                        if budgets_wanted && entry.kind == "record" {
                            events.extend(self.budgets.check(
                                &self.engine,
                                &entry.agent_id,
                                &entry.session_id,
                                entry.seq,
                            ));
                        }
                        self.dispatch(entry.seq, events);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "notifier lost the audit log; resuming from the store");
                        return;
                    }
                    None => return,
                },
                _ = check.tick(), if self.lease.is_some() => {
                    if let Some(lease) = &self.lease {
                        if !lease.hold().await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Queues each event on every endpoint that wants it, never waiting.
    fn dispatch(&self, seq: u64, events: Vec<Event>) {
        let wanted: Vec<(&Route, &Event)> = events
            .iter()
            .flat_map(|ev| {
                self.routes
                    .iter()
                    .filter(|r| r.endpoint.wants(ev.ty))
                    .map(move |r| (r, ev))
            })
            .collect();
        self.progress.opened(seq, wanted.len());
        for (route, ev) in wanted {
            route.metrics.depth.inc();
            if let Err(e) = route.queue.try_send(ev.clone()) {
                route.metrics.depth.dec();
                route.metrics.dead_queue_full.inc();
                self.progress.done(seq);
                tracing::error!(endpoint = %route.endpoint.name, id = %ev.id, event = ev.ty.name(),
                    error = %e, "webhook queue full: event dropped (dead letter)");
            }
        }
        self.progress.examined(seq);
    }
}
