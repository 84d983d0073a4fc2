//! Arbiter's MCP gateway: an MCP server in front of the MCP servers an agent may use.
//! Every `tools/call` asks Arbiter (Evaluate) before anything reaches an upstream, and
//! `tools/list` shows only what Arbiter's `FilterTools` lets the caller see. The gateway
//! is a client of Arbiter's gRPC API (through `arbiter-client`, with each caller's own
//! key), never a reach into the engine, so it runs in its own process next to or far
//! from the server. See docs/mcp.md.

mod answer;
mod call;
pub mod config;
mod docker;
mod gateway;
mod hooks;
mod http;
mod identity;
mod metrics;
mod pins;
mod state;
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
    let stop = CancellationToken::new();
    let base = arbiter(&config.arbiter)?;
    let sealer = state::Sealer::new(&config.request_state)?;
    let metrics = serve_metrics(&config, &stop).await?;
    let upstreams = start_upstreams(&config, &stop).await;
    let gateway = Gateway::new(
        upstreams,
        config.approval_wait,
        config.list_watch,
        metrics,
        None,
        sealer,
    );
    let ids = Arc::new(Identities::new(base));
    let app = http::router(&config.listen, gateway, ids, stop.child_token());
    let listener = tokio::net::TcpListener::bind(config.listen.addr)
        .await
        .with_context(|| format!("binding listen.addr {}", config.listen.addr))?;
    let addr = listener.local_addr()?;
    println!(
        "arbiter mcp-gateway listening on http://{addr}{}",
        config.listen.path
    );
    tracing::info!(%addr, "MCP gateway serving");
    let stopping = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await
        .context("serving HTTP")?;
    stop.cancel();
    Ok(())
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
    let metrics = serve_metrics(&config, &stop).await?;
    let upstreams = start_upstreams(&config, &stop).await;
    let gateway = Gateway::new(
        upstreams,
        config.approval_wait,
        config.list_watch,
        metrics,
        Some((caller, session)),
        sealer,
    );
    let running = gateway
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP handshake on stdin/stdout")?;
    let _ = running.waiting().await;
    stop.cancel();
    Ok(())
}

/// The metrics registry, served on `metrics.listen` when that is set.
async fn serve_metrics(
    config: &Config,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<metrics::Metrics>> {
    let metrics = Arc::new(metrics::Metrics::new());
    let Some(addr) = config.metrics.listen else {
        return Ok(metrics);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics.listen {addr}"))?;
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
    Ok(metrics)
}

fn arbiter(c: &config::ArbiterConfig) -> anyhow::Result<arbiter_client::Client> {
    let mut builder = arbiter_client::Client::builder(c.endpoint.clone()).timeout(c.timeout);
    if let Some(ca) = &c.tls_ca {
        let pem = std::fs::read(ca)
            .with_context(|| format!("arbiter.tls_ca: reading {}", ca.display()))?;
        builder = builder.tls_ca_pem(pem);
    }
    builder
        .connect_lazy()
        .map_err(|e| anyhow::anyhow!("arbiter.endpoint: {e}"))
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
