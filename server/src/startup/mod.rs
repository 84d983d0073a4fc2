//! The one place that wires store, keys, policy, engine, audit batcher, services,
//! health and reflection together, and that owns the stop order. `build` and
//! `run_until_stopped` read as the list of their steps; each step is a function here or
//! in a module of its own (`exposure`, `health`, `listeners`, `policy_reload`, `grpc`,
//! `stop`).

mod exposure;
mod grpc;
mod health;
mod listeners;
mod policy_reload;
mod stop;

use crate::audit::Batcher;
use crate::clock::{Clock, FileClock, SystemClock};
use crate::config::Settings;
use crate::engine::{Engine, KeyRingRecord};
use crate::metrics::Metrics;
use crate::policy::{loader, CompiledPolicy};
use crate::store::{PgStore, PublishedPolicy, SqliteStore, Store};
use anyhow::Context;
use listeners::Listeners;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

pub struct Application {
    listeners: Listeners,
    settings: Settings,
    tls: Option<crate::tls::ServerTls>,
    engine: Arc<Engine>,
    batcher_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    metrics: Metrics,
    notifier: Option<crate::notify::Notifier>,
}

/// Opens the database (PostgreSQL with `storage.database_url`, else the embedded SQLite
/// file) and applies migrations. Errors never carry the URL: it may hold a password.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let dir = &settings.storage.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    if let Some(url) = &settings.storage.database_url {
        let store = PgStore::open(url)
            .await
            .context("connecting to PostgreSQL")?;
        store
            .migrate()
            .await
            .context("applying PostgreSQL migrations")?;
        return Ok(Arc::new(store));
    }
    let path = settings.database_file();
    let store = SqliteStore::open(&path, settings.storage.synchronous == "full")
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.migrate().await.context("applying migrations")?;
    Ok(Arc::new(store))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let requested: SocketAddr = settings.server.listen.parse().context("server.listen")?;
        // Certificates are checked before anything else is touched, so a broken TLS
        // setup stops the start instead of serving in clear.
        let tls = crate::tls::load(&settings.server.tls)?;
        // The gateway's file too: a bad one stops the start before anything is opened.
        let gateway_config = match &settings.mcp_gateway.config {
            Some(path) => Some(crate::mcp_gateway::load(path, &settings.server.tls)?),
            None => None,
        };
        let keys = Keys::load(&settings)?;
        let store: Arc<dyn Store> = open_store(&settings).await?;
        let (policy, published) = initial_policy(&settings, store.as_ref()).await?;
        let metrics = Metrics::new();
        let (engine, batcher_task) =
            start_engine(&settings, store, keys, policy.clone(), &metrics).await?;
        exposure::check_and_announce(requested, &engine, tls.as_ref())?;
        if published.is_none() {
            engine
                .install_policy(policy.clone())
                .await
                .context("recording the policy load")?;
            tracing::info!(version = %policy.version, source = %policy.source, "policy loaded");
        }
        let mut background = Vec::new();
        if let Some(path) = settings.policy.path.clone() {
            background.push(policy_reload::spawn(
                engine.clone(),
                path,
                policy.version.clone(),
                Duration::from_millis(settings.policy.poll_interval_ms),
                metrics.clone(),
            ));
        }
        background.extend(crate::engine::spawn_loops(&engine));
        let notifier = start_notifier(&settings, &engine, &metrics).await?;
        let listeners = Listeners::bind(requested, &settings, &engine, gateway_config).await?;
        Ok(Self {
            listeners,
            settings,
            tls,
            engine,
            batcher_task,
            background,
            metrics,
            notifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.addr
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        listeners::addr_of(self.listeners.metrics.as_ref())
    }

    /// Where the operator console is served, when it is.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        listeners::addr_of(self.listeners.console.as_ref())
    }

    /// Where the in-process MCP gateway is served, when it is (http://ADDR/PATH).
    pub fn mcp_gateway_url(&self) -> Option<String> {
        self.listeners
            .mcp_gateway
            .as_ref()
            .and_then(|g| g.url().ok())
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves until `shutdown` resolves (or the in-process MCP gateway ends), then stops
    /// in this order (ARCHITECTURE.md, "Shutdown"): health turns NOT_SERVING; the MCP
    /// gateway stops and finishes its in-flight requests; no new connections are accepted;
    /// in-flight RPCs finish (both drains within one `server.shutdown_grace_ms`); background tasks
    /// stop; the audit writer commits what is queued, checks that the last signed
    /// checkpoint covers the whole log and syncs the mirror. Every answered decision
    /// was already durable, so nothing acknowledged is lost whatever is cut.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listeners,
            settings,
            tls,
            engine,
            batcher_task,
            mut background,
            metrics,
            notifier,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        // The reporter starts with "" SERVING; say nothing until the monitor has checked
        // the database and registered every service.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let (auth, refusal_task) = stop::audit_refusals(&engine, &settings, &metrics);
        let monitor = health::spawn_monitor(engine.clone(), health.clone());
        background.extend(serve_side_endpoints(
            listeners.metrics,
            listeners.console,
            &settings,
            tls.as_ref(),
            &engine,
            &metrics,
        )?);
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);

        // The in-process MCP gateway calls this server's gRPC listener, so it runs until
        // that listener stops accepting, and its own end stops the server.
        let gateway = listeners
            .mcp_gateway
            .map(|g| crate::mcp_gateway::Running::spawn(|stop| g.serve(stop)));
        let (gateway_failed_tx, mut gateway_failed) = tokio::sync::oneshot::channel();

        // Shutdown begins (on the signal, or when the gateway ended): load balancers
        // watching health stop sending first, then the gateway finishes its in-flight MCP
        // requests (their Evaluate and Record still get through), then tonic stops
        // accepting and waits for open connections. One grace period bounds both drains.
        let (draining_tx, draining) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
        let stop_accepting = begin_drain(
            shutdown,
            gateway,
            monitor,
            health.clone(),
            grace,
            gateway_failed_tx,
            draining_tx,
        );
        let services = grpc::Services {
            engine: engine.clone(),
            metrics: metrics.clone(),
            auth,
            max_message_bytes: settings.server.max_message_bytes,
        };
        let serving = grpc::serve(
            services,
            tls,
            health_service,
            listeners.grpc,
            stop_accepting,
        )?;
        let grace_over = async move {
            // Pending until shutdown begins (the sender is dropped unsent only when
            // the server ended for another reason).
            let Ok(started) = draining.await else {
                return std::future::pending::<()>().await;
            };
            tokio::time::sleep_until(started + grace).await;
        };
        let result = tokio::select! {
            r = serving => r,
            () = grace_over => {
                // Dropping the server cuts the remaining connections. A cut Evaluate
                // was never answered; if its entry was queued it is still committed.
                tracing::warn!("shutdown: grace period over; cutting the RPCs still open");
                Ok(())
            }
        };
        let finished = stop::after_serving(stop::Parts {
            notifier,
            background,
            refusal_task,
            engine,
            batcher_task,
        })
        .await;
        result.context("gRPC server failed")?;
        finished?;
        // A clean stop otherwise, but not a clean run: the exit code says so.
        match gateway_failed.try_recv() {
            Ok(e) => Err(e.context(
                "the in-process MCP gateway (mcp_gateway.config) stopped, so the server shut down",
            )),
            Err(_) => Ok(()),
        }
    }
}

/// The HMAC key ring and the checkpoint signing key, generated on first start.
struct Keys {
    hmac: crate::audit::KeyRing,
    signer: crate::audit::TreeSigner,
    signing_path: std::path::PathBuf,
}

impl Keys {
    fn load(settings: &Settings) -> anyhow::Result<Self> {
        let keys_path = settings.keys_file();
        let (hmac, generated) = crate::keys::load_or_generate(&keys_path)?;
        if generated {
            tracing::warn!(
                path = %keys_path.display(),
                "DEVELOPMENT KEYS GENERATED: a new audit HMAC key was written (mode 0600). Back it up; \
                 without it the audit log cannot be verified."
            );
        }
        let signing_path = settings.storage.data_dir.join("keys").join("signing.json");
        let (signer, generated) =
            crate::keys::load_or_generate_signer(&signing_path, settings.audit.origin.as_deref())?;
        if generated {
            tracing::warn!(
                path = %signing_path.display(),
                origin = %signer.origin,
                "DEVELOPMENT KEYS GENERATED: a new checkpoint signing key; its public key is in signing.pub"
            );
        }
        Ok(Self {
            hmac,
            signer,
            signing_path,
        })
    }
}

/// The bundle to serve first, and the publication it came from when it is another
/// replica's. A replica on a shared database without a file of its own serves what the
/// others published, and does not publish it again: a re-publication could land after
/// a newer one and turn every replica back.
async fn initial_policy(
    settings: &Settings,
    store: &dyn Store,
) -> anyhow::Result<(Arc<CompiledPolicy>, Option<PublishedPolicy>)> {
    let published = match &settings.policy.path {
        None if store.replicated().is_some() => store
            .published_policy()
            .await
            .context("reading the published policy bundle")?,
        _ => None,
    };
    let policy = match (&settings.policy.path, &published) {
        (Some(path), _) => Arc::new(loader::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?),
        (None, Some(p)) => {
            let policy = crate::engine::compile_published(p).map_err(|e| {
                anyhow::anyhow!(
                    "the policy bundle published on the database does not compile here \
                     (start with --policy FILE): {e}"
                )
            })?;
            tracing::info!(version = %policy.version, source = %policy.source, "serving the policy bundle published on the database");
            Arc::new(policy)
        }
        (None, None) => {
            tracing::warn!("no policy bundle configured (--policy FILE): every agent is denied with scope.no_policy");
            Arc::new(CompiledPolicy::empty())
        }
    };
    Ok((policy, published))
}

fn clock(settings: &Settings) -> Arc<dyn Clock> {
    match &settings.dev.clock_file {
        Some(path) => {
            tracing::warn!(path = %path.display(), "TEST CLOCK: time is read from a file; never use this in production");
            Arc::new(FileClock::new(path.clone()))
        }
        None => Arc::new(SystemClock),
    }
}

/// Starts the audit writer (after checking the log is whole), loads the engine on top
/// of it, and records the key ring when it changed.
async fn start_engine(
    settings: &Settings,
    store: Arc<dyn Store>,
    keys: Keys,
    policy: Arc<CompiledPolicy>,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<Engine>, JoinHandle<()>)> {
    let clock = clock(settings);
    let Keys {
        hmac,
        signer,
        signing_path,
    } = keys;
    let retired = crate::keys::retired_signing_keys(&signing_path)?;
    let key_ring = crate::engine::key_ring_summary(&hmac, &signer, &retired);
    let checkpoint_file = crate::audit::integrity::CheckpointFile {
        path: settings.checkpoint_file(),
        origin: signer.origin.clone(),
        trusted: std::iter::once(signer.key.verifying_key())
            .chain(retired.iter().copied())
            .collect(),
    };
    let tokens =
        crate::delegation::TokenKeys::new(signer.origin.clone(), signer.key.clone(), retired);
    let options = crate::audit::batcher::BatcherOptions {
        max_batch: settings.audit.max_batch,
        mirror: settings.audit.mirror.as_deref(),
        checkpoint_file: Some(checkpoint_file),
    };
    let (batcher, batcher_task) = Batcher::start(
        store.clone(),
        hmac.clone(),
        signer,
        options,
        metrics.audit(),
        clock.clone(),
    )
    .await
    .context("checking the audit log before serving")?;
    let engine = Arc::new(Engine::load(store, batcher, policy, clock, hmac, tokens).await?);
    match engine.record_key_ring(key_ring).await? {
        KeyRingRecord::Unchanged => {}
        KeyRingRecord::First(seq) => {
            tracing::info!(
                seq,
                "recorded the audit key ring in a new log (keys.changed)"
            );
        }
        KeyRingRecord::Changed(seq) => {
            tracing::warn!(seq, "the audit key ring changed since the last start (rotation or revocation); recorded as a keys.changed entry");
        }
    }
    Ok((engine, batcher_task))
}

/// Webhooks follow the committed log, after the engine is up; nothing on the decision
/// path waits for them.
async fn start_notifier(
    settings: &Settings,
    engine: &Arc<Engine>,
    metrics: &Metrics,
) -> anyhow::Result<Option<crate::notify::Notifier>> {
    // Several replicas deliver one at a time, under a lease; a single server's notifier
    // delivers alone (`None`).
    let lease = engine
        .store()
        .replicated()
        .map(|r| crate::notify::lease::Lease::new(r.handle()));
    crate::notify::Notifier::start(
        engine.clone(),
        &settings.notifications,
        settings.notifications_cursor_file(),
        lease,
        metrics.registry(),
    )
    .await
    .context("starting the webhook notifier")
}

/// The metrics endpoint and the operator console, on the listeners bound at build.
fn serve_side_endpoints(
    metrics_listener: Option<tokio::net::TcpListener>,
    console_listener: Option<tokio::net::TcpListener>,
    settings: &Settings,
    tls: Option<&crate::tls::ServerTls>,
    engine: &Arc<Engine>,
    metrics: &Metrics,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving Prometheus metrics on http://{addr}/metrics");
        let engine = engine.clone();
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            move || state_reading(&engine),
        )));
    }
    if let Some(listener) = console_listener {
        let addr = listener.local_addr()?;
        let url = crate::console::url(&settings.console, addr);
        tracing::info!(%addr, "serving the operator console on {url}");
        tasks.push(tokio::spawn(crate::console::serve(
            listener,
            engine.clone(),
            crate::console::Options::from_settings(
                &settings.console,
                tls.map(|t| t.rustls.as_ref()),
            ),
        )));
    }
    Ok(tasks)
}

/// What the metrics endpoint shows of the engine's state, read on each scrape.
fn state_reading(engine: &Engine) -> crate::metrics::StateReading {
    let g = engine.gauges();
    let batcher = engine.batcher();
    crate::metrics::StateReading {
        pending_approvals: g.pending_approvals,
        active_halts: g.active_halts,
        open_reservations: g.open_reservations,
        audit_head: batcher.head_seq(),
        audit_queue: batcher.queue_depth(),
        pool: engine.store().pool_stats(),
    }
}

/// Resolves when shutdown begins (on the signal, or when the gateway ended), after
/// health has turned NOT_SERVING and the gateway has finished its in-flight requests;
/// tells `draining` when that began, so one grace period bounds both drains.
async fn begin_drain(
    shutdown: impl Future<Output = ()>,
    mut gateway: Option<crate::mcp_gateway::Running>,
    monitor: JoinHandle<()>,
    health: tonic_health::server::HealthReporter,
    grace: Duration,
    gateway_failed: tokio::sync::oneshot::Sender<anyhow::Error>,
    draining: tokio::sync::oneshot::Sender<tokio::time::Instant>,
) {
    if let Some(e) = shutdown_or_gateway_end(shutdown, gateway.as_mut()).await {
        let _ = gateway_failed.send(e);
    }
    let started = tokio::time::Instant::now();
    monitor.abort();
    let _ = monitor.await;
    health::not_serving(&health).await;
    if let Some(g) = gateway {
        g.stop(grace).await;
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutdown: health NOT_SERVING, no new connections, draining in-flight RPCs"
    );
    let _ = draining.send(started);
}

/// Waits for the shutdown signal (None), or for the in-process gateway to end by itself
/// (why it did): then the server shuts down too rather than serve without it.
async fn shutdown_or_gateway_end(
    shutdown: impl Future<Output = ()>,
    gateway: Option<&mut crate::mcp_gateway::Running>,
) -> Option<anyhow::Error> {
    let Some(gateway) = gateway else {
        shutdown.await;
        return None;
    };
    tokio::select! {
        () = shutdown => None,
        e = gateway.failed() => {
            tracing::error!(error = %format!("{e:#}"), "the in-process MCP gateway stopped; shutting the server down with it");
            Some(e)
        }
    }
}
