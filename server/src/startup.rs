//! The one place that wires store, keys, policy, engine, audit batcher, services,
//! health and reflection together.

use crate::api::{admin::AdminApi, audit::AuditApi, control::ControlApi, decision::DecisionApi};
use crate::audit::Batcher;
use crate::clock::{Clock, FileClock, SystemClock};
use crate::config::Settings;
use crate::engine::Engine;
use crate::policy::{loader, CompiledPolicy};
use crate::store::{SqliteStore, Store};
use anyhow::{bail, Context};
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
    engine: Arc<Engine>,
    batcher_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// Opens the embedded database and applies migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SqliteStore> {
    let dir = &settings.storage.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = settings.database_file();
    let store = SqliteStore::open(&path, settings.storage.synchronous == "full")
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let requested: SocketAddr = settings.server.listen.parse().context("server.listen")?;
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
        let store: Arc<dyn Store> = Arc::new(open_store(&settings).await?);

        let policy = match &settings.policy.path {
            Some(path) => Arc::new(loader::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => {
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
        let retired = crate::keys::retired_signing_keys(&signing_path)?;
        let key_ring = crate::engine::key_ring_summary(&keys, &signer, &retired);
        let tokens =
            crate::delegation::TokenKeys::new(signer.origin.clone(), signer.key.clone(), retired);
        let (batcher, batcher_task) = Batcher::start(
            store.clone(),
            keys.clone(),
            signer,
            settings.audit.max_batch,
            settings.audit.mirror.as_deref(),
        )
        .await?;
        let engine =
            Arc::new(Engine::load(store, batcher, policy.clone(), clock, keys, tokens).await?);
        if let Some(seq) = engine.record_key_ring(key_ring).await? {
            tracing::warn!(seq, "the audit key ring changed since the last start (rotation or revocation); recorded as a keys.changed entry");
        }
        if engine.auth_required() {
            tracing::info!(
                "authentication on: every call needs an API key (`authorization: Bearer <key>`)"
            );
        } else if requested.ip().is_loopback() {
            tracing::warn!(
                "DEVELOPMENT MODE: no principals exist, so every caller on this loopback address has every role. \
                 Create one with `arbiter principals create NAME --role admin` to switch authentication on."
            );
        } else {
            bail!(
                "refusing to serve on {requested} without authentication: no principals exist yet. Start on \
                 127.0.0.1, create an admin with `arbiter principals create NAME --role admin`, then restart on \
                 {requested}."
            );
        }
        engine
            .install_policy(policy.clone())
            .await
            .context("recording the policy load")?;
        tracing::info!(version = %policy.version, source = %policy.source, "policy loaded");

        let mut background = Vec::new();
        if let Some(path) = settings.policy.path.clone() {
            background.push(spawn_policy_reload(
                engine.clone(),
                path,
                policy.version.clone(),
                Duration::from_millis(settings.policy.poll_interval_ms),
            ));
        }
        let maintained = engine.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Err(e) = maintained.store().maintain().await {
                    tracing::warn!(error = %e, "store maintenance failed");
                }
            }
        }));
        let watchdog = engine.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                watchdog.watchdog().await;
            }
        }));
        let expirer = engine.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                expirer.expire_approvals().await;
            }
        }));
        let pruner = engine.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                pruner.prune();
            }
        }));

        let listener = TcpListener::bind(requested)
            .await
            .with_context(|| format!("binding {requested}"))?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            settings,
            engine,
            batcher_task,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves until `shutdown` resolves, then drains in-flight RPCs. Every answered
    /// decision is already durable, so nothing is lost on return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let (refusals, mut refused) = tokio::sync::mpsc::channel(1024);
        let auditor = self.engine.clone();
        let refusal_task = tokio::spawn(async move {
            while let Some(r) = refused.recv().await {
                auditor.record_refusal(r).await;
            }
        });
        let auth = crate::auth::Authenticator {
            book: self.engine.principal_book(),
            refusals,
        };
        use tonic::service::interceptor::InterceptedService as Authed;
        let monitor = spawn_health_monitor(self.engine.clone(), health);
        let max = self.settings.server.max_message_bytes;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let engine = self.engine.clone();
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(Authed::new(
                DecisionServiceServer::new(DecisionApi {
                    engine: engine.clone(),
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
                shutdown,
            )
            .await;
        monitor.abort();
        refusal_task.abort();
        for task in self.background {
            task.abort();
        }
        drop(self.engine);
        // The batcher ends once the last engine handle is gone and its queue is empty.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.batcher_task).await;
        result.context("gRPC server failed")
    }
}

fn spawn_policy_reload(
    engine: Arc<Engine>,
    path: std::path::PathBuf,
    version: String,
    poll: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = loader::watch(path.clone(), version, poll);
        while let Some(change) = changes.recv().await {
            match change {
                loader::Reload::Valid(policy) => {
                    let version = policy.version.clone();
                    match engine.install_policy(Arc::from(policy)).await {
                        Ok(seq) => tracing::info!(%version, audit_seq = seq, "policy reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "policy reload could not be recorded; the old policy keeps serving")
                        }
                    }
                }
                loader::Reload::Invalid { version, error } => {
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

fn spawn_health_monitor(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ok = engine.store().ping().await.is_ok() && *engine.batcher().healthy().borrow();
            if last != Some(ok) {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in HEALTH_SERVICES {
                    health.set_service_status(name, status).await;
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
