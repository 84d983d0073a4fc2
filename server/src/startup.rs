//! The one place that wires store, keys, policy, engine, audit batcher, services,
//! health and reflection together.

use crate::api::{admin::AdminApi, audit::AuditApi, control::ControlApi, decision::DecisionApi};
use crate::audit::Batcher;
use crate::clock::{Clock, FileClock, SystemClock};
use crate::config::{ClientAuth, Settings};
use crate::engine::{Engine, KeyRingRecord};
use crate::metrics::Metrics;
use crate::policy::{loader, CompiledPolicy};
use crate::store::{PgStore, SqliteStore, Store};
use anyhow::Context;
use arbiter_proto::v1::{
    admin_service_server::AdminServiceServer, audit_service_server::AuditServiceServer,
    control_service_server::ControlServiceServer, decision_service_server::DecisionServiceServer,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

/// Service names reported by grpc.health.v1 (plus "" for the whole server).
const HEALTH_SERVICES: [&str; 5] = [
    "",
    "arbiter.v1.DecisionService",
    "arbiter.v1.ControlService",
    "arbiter.v1.AdminService",
    "arbiter.v1.AuditService",
];

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    settings: Settings,
    tls: Option<crate::tls::ServerTls>,
    engine: Arc<Engine>,
    batcher_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
    notifier: Option<crate::notify::Notifier>,
    console_listener: Option<TcpListener>,
    mcp_gateway: Option<arbiter_mcp_gateway::HttpGateway>,
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
        let keys_path = settings.keys_file();
        let (keys, generated) = crate::keys::load_or_generate(&keys_path)?;
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
        let store: Arc<dyn Store> = open_store(&settings).await?;

        // A replica on a shared database without a file of its own serves what the
        // others published, and does not publish it again: a re-publication could land
        // after a newer one and turn every replica back.
        let published = match &settings.policy.path {
            None if store.replicated().is_some() => store
                .published_policy()
                .await
                .context("reading the published policy bundle")?,
            _ => None,
        };
        let policy = match (&settings.policy.path, &published) {
            (Some(path), _) => {
                Arc::new(loader::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
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
        let clock: Arc<dyn Clock> = match &settings.dev.clock_file {
            Some(path) => {
                tracing::warn!(path = %path.display(), "TEST CLOCK: time is read from a file; never use this in production");
                Arc::new(FileClock::new(path.clone()))
            }
            None => Arc::new(SystemClock),
        };
        let metrics = Metrics::new();
        let retired = crate::keys::retired_signing_keys(&signing_path)?;
        let key_ring = crate::engine::key_ring_summary(&keys, &signer, &retired);
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
            keys.clone(),
            signer,
            options,
            metrics.audit(),
            clock.clone(),
        )
        .await
        .context("checking the audit log before serving")?;
        let engine =
            Arc::new(Engine::load(store, batcher, policy.clone(), clock, keys, tokens).await?);
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
        let client_auth = tls.as_ref().map_or(ClientAuth::None, |t| t.client_auth);
        let (key_principals, tls_principals) = engine.credential_kinds();
        exposure_check(
            requested,
            engine.auth_required(),
            key_principals,
            client_auth,
        )
        .map_err(anyhow::Error::msg)?;
        if engine.auth_required() {
            tracing::info!(
                "authentication on: every call needs an API key (`authorization: Bearer <key>`) \
                 or a client certificate bound to a principal"
            );
        } else {
            tracing::warn!(
                "DEVELOPMENT MODE: no principals exist, so every caller on this loopback address has every role. \
                 Create one with `arbiter principals create NAME --role admin` to switch authentication on."
            );
        }
        if tls_principals && client_auth == ClientAuth::None {
            tracing::warn!(
                "principals bound to client certificates cannot authenticate: server.tls.client_auth is none"
            );
        }
        match &tls {
            Some(t) => tracing::info!(client_auth = %t.client_auth, "TLS on"),
            None if !requested.ip().is_loopback() => tracing::warn!(
                "TLS is off on {requested}: API keys and decisions cross the network in clear. \
                 Set server.tls.cert_file and server.tls.key_file."
            ),
            None => {}
        }
        if published.is_none() {
            engine
                .install_policy(policy.clone())
                .await
                .context("recording the policy load")?;
            tracing::info!(version = %policy.version, source = %policy.source, "policy loaded");
        }

        let mut background = Vec::new();
        if let Some(path) = settings.policy.path.clone() {
            background.push(spawn_policy_reload(
                engine.clone(),
                path,
                policy.version.clone(),
                Duration::from_millis(settings.policy.poll_interval_ms),
                metrics.clone(),
            ));
        }
        background.extend(crate::engine::spawn_loops(&engine));

        // Webhooks follow the committed log, after the engine is up; nothing on the
        // decision path waits for them. Several replicas deliver one at a time, under a
        // lease; a single server's notifier delivers alone (`None`).
        let lease = engine
            .store()
            .replicated()
            .map(|r| crate::notify::lease::Lease::new(r.handle()));
        let notifier = crate::notify::Notifier::start(
            engine.clone(),
            &settings.notifications,
            settings.notifications_cursor_file(),
            lease,
            metrics.registry(),
        )
        .await
        .context("starting the webhook notifier")?;

        let listener = TcpListener::bind(requested)
            .await
            .with_context(|| format!("binding {requested}"))?;
        let addr = listener.local_addr()?;
        // A configured metrics port that cannot be bound stops the start: a missing
        // endpoint would otherwise only show up as a silent gap in monitoring.
        let metrics_listener = match settings.metrics.addr().map_err(anyhow::Error::msg)? {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding metrics.listen {a}"))?,
            ),
            None => None,
        };
        // The console too: an operator who was told the URL must find it there.
        let console_listener = match settings.console.addr().map_err(anyhow::Error::msg)? {
            Some(a) => {
                console_exposure_check(a, engine.auth_required(), &settings.console)
                    .map_err(anyhow::Error::msg)?;
                Some(
                    TcpListener::bind(a)
                        .await
                        .with_context(|| format!("binding console.listen {a}"))?,
                )
            }
            None => None,
        };
        // Bound now, so a taken port or an unreadable secret stops the start too; it
        // calls the gRPC listener just bound.
        let mcp_gateway = match (gateway_config, &settings.mcp_gateway.config) {
            (Some(mut config), Some(path)) => {
                // This server's console is where its approvals are decided, unless the
                // gateway's file names another address for it.
                if config.console_url.is_none() {
                    config.console_url = settings.console.public_url.clone();
                }
                Some(crate::mcp_gateway::bind(config, path, addr, &settings.server.tls).await?)
            }
            _ => None,
        };
        Ok(Self {
            listener,
            addr,
            settings,
            tls,
            engine,
            batcher_task,
            background,
            metrics,
            metrics_listener,
            notifier,
            console_listener,
            mcp_gateway,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the operator console is served, when it is.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the in-process MCP gateway is served, when it is (http://ADDR/PATH).
    pub fn mcp_gateway_url(&self) -> Option<String> {
        self.mcp_gateway.as_ref().and_then(|g| g.url().ok())
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
        let (health, health_service) = tonic_health::server::health_reporter();
        // The reporter starts with "" SERVING; say nothing until the monitor has checked
        // the database and registered every service.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let (refusals, mut refused) = crate::auth::RefusalQueue::new(
            self.settings.dev.refusal_queue,
            self.metrics.refusals_dropped(),
        );
        let auditor = self.engine.clone();
        let refusal_task = tokio::spawn(async move {
            while let Some(queued) = refused.next().await {
                match queued {
                    crate::auth::Queued::Refusal(r) => auditor.record_refusal(r).await,
                    crate::auth::Queued::Dropped(n) => auditor.record_dropped_refusals(n).await,
                }
            }
        });
        let auth = crate::auth::Authenticator {
            book: self.engine.principal_book(),
            refusals,
        };
        use tonic::service::interceptor::InterceptedService as Authed;
        let monitor = spawn_health_monitor(self.engine.clone(), health.clone());
        let mut background = self.background;
        if let Some(listener) = self.metrics_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "serving Prometheus metrics on http://{addr}/metrics");
            let engine = self.engine.clone();
            background.push(tokio::spawn(crate::metrics::serve(
                listener,
                self.metrics.clone(),
                move || state_reading(&engine),
            )));
        }
        if let Some(listener) = self.console_listener {
            let addr = listener.local_addr()?;
            let url = crate::console::url(&self.settings.console, addr);
            tracing::info!(%addr, "serving the operator console on {url}");
            background.push(tokio::spawn(crate::console::serve(
                listener,
                self.engine.clone(),
                crate::console::Options::from_settings(
                    &self.settings.console,
                    self.tls.as_ref().map(|t| t.rustls.as_ref()),
                ),
            )));
        }
        let max = self.settings.server.max_message_bytes;
        let grace = Duration::from_millis(self.settings.server.shutdown_grace_ms);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        // The in-process MCP gateway calls this server's gRPC listener, so it runs until
        // that listener stops accepting, and its own end stops the server.
        let mut gateway = self
            .mcp_gateway
            .map(|g| crate::mcp_gateway::Running::spawn(|stop| g.serve(stop)));
        let (gateway_failed_tx, mut gateway_failed) = tokio::sync::oneshot::channel();

        // Shutdown begins (on the signal, or when the gateway ended): load balancers
        // watching health stop sending first, then the gateway finishes its in-flight MCP
        // requests (their Evaluate and Record still get through), then tonic stops
        // accepting and waits for open connections. One grace period bounds both drains.
        let (draining_tx, draining) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
        let stop_accepting = {
            let health = health.clone();
            async move {
                if let Some(e) = shutdown_or_gateway_end(shutdown, gateway.as_mut()).await {
                    let _ = gateway_failed_tx.send(e);
                }
                let started = tokio::time::Instant::now();
                monitor.abort();
                let _ = monitor.await;
                for name in HEALTH_SERVICES {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                if let Some(g) = gateway {
                    g.stop(grace).await;
                }
                tracing::info!(
                    grace_ms = grace.as_millis() as u64,
                    "shutdown: health NOT_SERVING, no new connections, draining in-flight RPCs"
                );
                let _ = draining_tx.send(started);
            }
        };

        let engine = self.engine.clone();
        let mut server = tonic::transport::Server::builder()
            .trace_fn(crate::telemetry::rpc_span)
            .layer(crate::metrics::RpcLayer(self.metrics.clone()));
        if let Some(tls) = self.tls {
            server = server
                .tls_config(tls.config)
                .context("server.tls: building the TLS acceptor")?;
        }
        let serving = server
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(Authed::new(
                DecisionServiceServer::new(DecisionApi {
                    engine: engine.clone(),
                    metrics: self.metrics.clone(),
                })
                .max_decoding_message_size(max),
                auth.clone(),
            ))
            .add_service(Authed::new(
                ControlServiceServer::new(ControlApi {
                    engine: engine.clone(),
                })
                .max_decoding_message_size(max),
                auth.clone(),
            ))
            .add_service(Authed::new(
                AdminServiceServer::new(AdminApi {
                    engine: engine.clone(),
                })
                .max_decoding_message_size(max),
                auth.clone(),
            ))
            .add_service(Authed::new(
                AuditServiceServer::new(AuditApi { engine }).max_decoding_message_size(max),
                auth,
            ))
            .serve_with_incoming_shutdown(
                // A reply's trailers go out in a second small write; without TCP_NODELAY
                // Nagle's algorithm holds it for the client's delayed ACK (~40 ms).
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                stop_accepting,
            );
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

        // Every answered decision is durable by now; queued webhooks get a short drain.
        if let Some(n) = self.notifier {
            n.stop().await;
        }
        for task in &background {
            task.abort();
        }
        // Refusals already queued are audited too ("every refusal is audited"): the
        // queue ends once the services holding its sender are gone. A connection cut
        // by the grace period may keep one alive, hence the bound.
        let mut refusal_task = refusal_task;
        if tokio::time::timeout(Duration::from_secs(2), &mut refusal_task)
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
        if let Err(e) = self.engine.flush_presence().await {
            tracing::warn!(error = %e, "shutdown: the last heartbeats could not be stored");
        }
        self.engine.batcher().close();
        let store = self.engine.store().clone();
        drop(self.engine);
        // Bounded by the store's own timeouts in practice; the cap keeps a wedged
        // database from holding the process forever.
        let finished = tokio::time::timeout(BATCHER_STOP_DEADLINE, self.batcher_task).await;
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
        result.context("gRPC server failed")?;
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("the audit writer failed while stopping: {e}"),
            Err(_) => anyhow::bail!(
                "the audit writer did not finish its last batch within {BATCHER_STOP_DEADLINE:?}; \
                 unanswered requests may be missing from the log (answered ones are not)"
            ),
        }
        // A clean stop otherwise, but not a clean run: the exit code says so.
        match gateway_failed.try_recv() {
            Ok(e) => Err(e.context(
                "the in-process MCP gateway (mcp_gateway.config) stopped, so the server shut down",
            )),
            Err(_) => Ok(()),
        }
    }
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

/// How long the audit writer may take to commit its last batch at shutdown.
const BATCHER_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a clean stop waits for the store to checkpoint and close.
const STORE_CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Whether this server may listen on `addr`. Off loopback every caller must be
/// authenticated: principals must exist, and if none of them holds an API key, callers
/// can only be told apart by client certificates, so those must be required.
fn exposure_check(
    addr: SocketAddr,
    auth_required: bool,
    key_principals: bool,
    client_auth: ClientAuth,
) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !auth_required {
        return Err(format!(
            "refusing to serve on {addr} without authentication: no principals exist yet. Start on \
             127.0.0.1, create an admin with `arbiter principals create NAME --role admin` (or bind one \
             to a client certificate with --tls-identity), then restart on {addr}."
        ));
    }
    if !key_principals && client_auth != ClientAuth::Required {
        return Err(format!(
            "refusing to serve on {addr}: no active principal has an API key, so callers can only be \
             identified by client certificates, but server.tls.client_auth is {client_auth}. Set it to \
             \"required\" (with server.tls.client_ca_file), or create an API-key principal."
        ));
    }
    Ok(())
}

/// The console accepts API keys in a form: off loopback it needs principals (there is
/// no development mode off this machine) and should sit behind TLS.
fn console_exposure_check(
    addr: SocketAddr,
    auth_required: bool,
    console: &crate::config::ConsoleSettings,
) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !auth_required {
        return Err(format!(
            "refusing to serve the console on {addr} without authentication: no principals exist \
             yet. Keep console.listen on 127.0.0.1 or create principals first."
        ));
    }
    if !console.tls
        && !console
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    {
        tracing::warn!(
            "the console on {addr} is plain HTTP: API keys typed into the sign-in form cross the \
             network in clear. Put a TLS proxy in front and set console.public_url to its https:// URL."
        );
    }
    Ok(())
}

fn spawn_policy_reload(
    engine: Arc<Engine>,
    path: std::path::PathBuf,
    version: String,
    poll: Duration,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = loader::watch(path.clone(), version, poll);
        while let Some(change) = changes.recv().await {
            match change {
                loader::Reload::Valid(policy) => {
                    let version = policy.version.clone();
                    if version == engine.policy().version {
                        // Already adopted from another replica's publication.
                        tracing::info!(%version, "policy file changed to the bundle already served");
                        continue;
                    }
                    match engine.install_policy(Arc::from(policy)).await {
                        Ok(seq) => {
                            metrics.record_policy_reload(true);
                            tracing::info!(%version, audit_seq = seq, "policy reloaded")
                        }
                        Err(e) => {
                            // Not serving the new bundle: for operators that is a rejection.
                            metrics.record_policy_reload(false);
                            tracing::error!(error = %e, "policy reload could not be recorded; the old policy keeps serving")
                        }
                    }
                }
                loader::Reload::Invalid { version, error } => {
                    metrics.record_policy_reload(false);
                    tracing::error!(%version, error = %error, "policy change rejected; the previous policy keeps serving");
                    if let Err(e) = engine
                        .reject_policy(&path.display().to_string(), &version, &error.to_string())
                        .await
                    {
                        tracing::error!(error = %e, "could not record the policy rejection");
                    }
                }
            }
        }
    })
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

fn spawn_health_monitor(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_serving_needs_principals_and_keys_or_required_mtls() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        // Loopback: always, development mode included.
        assert!(exposure_check(lo, false, false, ClientAuth::None).is_ok());
        // No principals at all: never off loopback, whatever TLS says.
        let err = exposure_check(any, false, false, ClientAuth::Required).unwrap_err();
        assert!(err.contains("without authentication"), "{err}");
        // API-key principals: allowed with or without mTLS.
        assert!(exposure_check(any, true, true, ClientAuth::None).is_ok());
        // Certificate principals only: mTLS must be required.
        assert!(exposure_check(any, true, false, ClientAuth::Required).is_ok());
        for mode in [ClientAuth::None, ClientAuth::Optional] {
            let err = exposure_check(any, true, false, mode).unwrap_err();
            assert!(err.contains("server.tls.client_auth is"), "{err}");
        }
    }
}
