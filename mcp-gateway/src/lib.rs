//! Arbiter's MCP gateway: an MCP server in front of the MCP servers an agent may use.
//! Every `tools/call` asks Arbiter (Evaluate) before anything reaches an upstream, and
//! `tools/list` shows only what Arbiter's `FilterTools` lets the caller see. The gateway
//! is a client of Arbiter's gRPC API (through `arbiter-client`, with each caller's own
//! key), never a reach into the engine, so it runs in its own process next to or far
//! from the server, or inside `arbiter serve`, which points it at its own gRPC listener
//! (`HttpGateway`). See docs/mcp.md.

mod answer;
mod call;
pub mod config;
mod console;
mod docker;
mod gateway;
mod hooks;
mod http;
mod identity;
mod in_order;
mod logs;
mod metrics;
mod pins;
mod state;
mod trace;
mod upstream;
mod usage;
mod watch;

use anyhow::Context;
use config::Config;
use gateway::Gateway;
use identity::Identities;
use rmcp::ServiceExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use upstream::Upstream;

pub use gateway::SESSION_HEADER;

/// How long start-up waits for each upstream's first connection before it goes on
/// (a slow upstream keeps being retried in the background).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Serves MCP over Streamable HTTP until `shutdown` resolves. The first stdout line
/// names the bound address ("arbiter mcp-gateway listening on http://ADDR/PATH").
pub async fn run_http(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    HttpGateway::bind(config).await?.serve(shutdown).await
}

/// A Streamable HTTP gateway whose configuration is checked and whose listeners are
/// bound, not serving yet. `arbiter serve` binds it before it announces itself, so a bad
/// file, an unreadable secret or a taken port stops the start instead of leaving a
/// server without its gateway.
pub struct HttpGateway {
    config: Config,
    base: arbiter_client::Client,
    sealer: state::Sealer,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl HttpGateway {
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let base = arbiter(&config.arbiter)?;
        let sealer = state::Sealer::new(&config.request_state)?;
        let metrics_listener = bind_metrics(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.listen.addr)
            .await
            .with_context(|| format!("binding listen.addr {}", config.listen.addr))?;
        Ok(Self {
            config,
            base,
            sealer,
            listener,
            metrics_listener,
        })
    }

    /// Where MCP clients connect: http://ADDR/PATH with the bound port.
    pub fn url(&self) -> anyhow::Result<String> {
        let addr = self.listener.local_addr()?;
        Ok(format!("http://{addr}{}", self.config.listen.path))
    }

    /// Starts the upstreams and serves until `shutdown` resolves. Prints
    /// "arbiter mcp-gateway listening on URL" once requests are answered.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let url = self.url()?;
        let config = self.config;
        let stop = CancellationToken::new();
        let metrics = serve_metrics(self.metrics_listener, &stop);
        let upstreams = start_upstreams(&config, &stop).await;
        let gateway = Gateway::new(
            upstreams,
            config.approval_wait,
            config.list_watch,
            metrics,
            None,
            self.sealer,
            config.console_url.clone(),
        );
        let ids = Arc::new(Identities::new(self.base));
        let app = http::router(
            &config.listen,
            &config.hooks,
            gateway,
            ids,
            stop.child_token(),
        );
        println!("arbiter mcp-gateway listening on {url}");
        tracing::info!(%url, "MCP gateway serving");
        let stopping = stop.clone();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stopping.cancel();
            })
            .await
            .context("serving HTTP")?;
        stop.cancel();
        Ok(())
    }
}

/// Serves one MCP client over stdin/stdout (desktop clients), as `agent`, with the key
/// in `api_key`; Arbiter must confirm that the key acts for exactly that agent.
pub async fn run_stdio(
    config: Config,
    agent: &str,
    api_key: &str,
    session: Option<String>,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let base = arbiter(&config.arbiter)?;
    let sealer = state::Sealer::new(&config.request_state)?;
    let caller = Identities::new(base)
        .for_key(api_key)
        .await
        .map_err(|e| anyhow::anyhow!("ARBITER_API_KEY: {e}"))?;
    if caller.agent != agent {
        anyhow::bail!(
            "--agent {agent}: the API key's principal {} acts for agent {}, not {agent}",
            caller.principal,
            caller.agent
        );
    }
    // One process is one run of the agent unless the launcher names the run.
    let session = session.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let metrics = serve_metrics(bind_metrics(&config).await?, &stop);
    let upstreams = start_upstreams(&config, &stop).await;
    let gateway = Gateway::new(
        upstreams,
        config.approval_wait,
        config.list_watch,
        metrics,
        Some((caller, session)),
        sealer,
        config.console_url.clone(),
    );
    let running = gateway
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP handshake on stdin/stdout")?;
    let _ = running.waiting().await;
    stop.cancel();
    Ok(())
}

/// The listener of `metrics.listen`, when that is set.
async fn bind_metrics(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.metrics.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics.listen {addr}"))?;
    Ok(Some(listener))
}

/// The metrics registry, served on `listener` when there is one.
fn serve_metrics(
    listener: Option<tokio::net::TcpListener>,
    stop: &CancellationToken,
) -> Arc<metrics::Metrics> {
    let metrics = Arc::new(metrics::Metrics::new());
    let Some(listener) = listener else {
        return metrics;
    };
    let registry = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { registry.render() }
        }),
    );
    let stopped = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    metrics
}

/// Arbiter's client. Every call carries the MCP client's own key (`Identities`); the
/// TLS pieces only open the connection.
fn arbiter(c: &config::ArbiterConfig) -> anyhow::Result<arbiter_client::Client> {
    let endpoint = c
        .endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("arbiter.endpoint: not set"))?;
    let mut builder = arbiter_client::Client::builder(endpoint).timeout(c.timeout);
    if let Some(ca) = &c.tls_ca {
        builder = builder.tls_ca_pem(read_pem("arbiter.tls_ca", ca)?);
    }
    if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
        builder = builder.tls_identity_pem(
            read_pem("arbiter.tls_cert", cert)?,
            read_pem("arbiter.tls_key", key)?,
        );
    }
    if let Some(name) = &c.tls_domain {
        builder = builder.tls_domain_name(name.clone());
    }
    builder
        .connect_lazy()
        .map_err(|e| anyhow::anyhow!("arbiter.endpoint: {e}"))
}

fn read_pem(field: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{field}: reading {}", path.display()))
}

async fn start_upstreams(config: &Config, stop: &CancellationToken) -> Vec<Arc<Upstream>> {
    let upstreams: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| Upstream::start(u, config.upstream_timeout, stop.child_token()))
        .collect();
    for u in &upstreams {
        if !u.ready(FIRST_CONNECT_WAIT).await {
            tracing::warn!(upstream = %u.name, "upstream not connected yet; retrying in the background");
        }
    }
    upstreams
}
