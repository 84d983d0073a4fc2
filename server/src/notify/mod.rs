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
//! retries. Delivery is at-least-once; the `webhook-id` is stable per event.

pub mod budget;
pub mod cursor;
pub mod deliver;
pub mod event;
pub mod metrics;
pub mod payload;
pub mod settings;
pub mod sign;

use crate::engine::Engine;
use crate::store::AuditQuery;
use cursor::{CursorFile, Progress};
use event::{Event, EventType};
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

pub struct Notifier {
    dispatcher: JoinHandle<()>,
    keeper: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    progress: Arc<Progress>,
    cursor: CursorFile,
    drain: Duration,
}

struct Route {
    endpoint: Endpoint,
    queue: mpsc::Sender<Event>,
    metrics: EndpointMetrics,
}

impl Notifier {
    /// Starts the workers and the dispatcher, or returns None without endpoints.
    /// `cursor_file` is where the delivery cursor lives.
    pub async fn start(
        engine: Arc<Engine>,
        settings: &NotificationSettings,
        cursor_file: PathBuf,
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
        let dispatcher = Dispatcher {
            engine,
            routes,
            budgets: budget::BudgetWatch::new(&settings.budget_shares),
            progress: progress.clone(),
            lags: m.log_lags.clone(),
        };
        tracing::info!(after_seq = start, "notifier following the audit log");
        let dispatcher = tokio::spawn(dispatcher.run());
        let keeper = tokio::spawn(keep_cursor(
            progress.clone(),
            CursorFile::new(cursor.path().to_owned()),
        ));
        Ok(Some(Self {
            dispatcher,
            keeper,
            workers,
            progress,
            cursor,
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
        if let Err(e) = self.cursor.write(safe) {
            tracing::warn!(error = %e, "shutdown: cannot write the webhook cursor");
        }
    }
}

/// Rewrites the cursor file whenever it moved.
async fn keep_cursor(progress: Arc<Progress>, file: CursorFile) {
    let mut written = None;
    let mut tick = tokio::time::interval(CURSOR_EVERY);
    loop {
        tick.tick().await;
        let safe = progress.safe();
        if written != Some(safe) {
            match file.write(safe) {
                Ok(()) => written = Some(safe),
                Err(e) => tracing::warn!(error = %e, path = %file.path().display(),
                    "cannot write the webhook cursor; will retry"),
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
}

impl Dispatcher {
    async fn run(mut self) {
        let q = AuditQuery {
            kinds: event::SOURCE_KINDS.map(String::from).to_vec(),
            ..Default::default()
        };
        let budgets_wanted = self
            .routes
            .iter()
            .any(|r| r.endpoint.wants(EventType::BudgetThreshold));
        loop {
            let after = self.progress.last_examined();
            let follow = self
                .engine
                .follow_log_counted(q.clone(), Some(after), Some(self.lags.clone()))
                .await;
            let mut entries = match follow {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(error = %e, "notifier cannot follow the audit log; will retry");
                    tokio::time::sleep(RESUME_AFTER).await;
                    continue;
                }
            };
            while let Some(next) = entries.recv().await {
                match next {
                    Ok(entry) => {
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
                    Err(e) => {
                        tracing::warn!(error = %e, "notifier lost the audit log; resuming from the store");
                        break;
                    }
                }
            }
            tokio::time::sleep(RESUME_AFTER).await;
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
