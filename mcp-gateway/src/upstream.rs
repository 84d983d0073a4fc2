//! The upstream MCP servers: one supervised rmcp client each. A supervisor task keeps
//! the connection up (a stdio server is started, and started again with backoff when it
//! exits); calls take the live peer or fail with a clear error, never hang. A call's
//! `notifications/progress` from the upstream are relayed to the client that asked for
//! them, under the client's own token, and so are its log messages (`logs.rs`); a call
//! abandoned by its client (cancelled, timed out, disconnected) is cancelled upstream too.

use crate::config::{HttpConfig, StdioConfig, Transport, UpstreamConfig};
use crate::in_order::Ordered;
use crate::logs::{LogRoute, LogRoutes};
use anyhow::Context;
use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::handler::client::progress::{ProgressDispatcher, ProgressSubscriber};
#[allow(deprecated)] // logging: see logs.rs
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
    ClientRequest, JsonObject, LoggingMessageNotificationParam, MetaObject,
    ProgressNotificationParam, ProgressToken, RequestId, RequestMetaObject, ServerResult, Tool,
};
use rmcp::service::{
    Peer, PeerRequestOptions, RoleClient, RoleServer, RunningService, ServiceError,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::ClientHandler;
use rmcp::ServiceExt;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Restart delays: doubled after each failure, reset once a connection lived this long.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a call waits for a restarting upstream before it gives up.
const RECONNECT_WAIT: Duration = Duration::from_secs(5);
/// After the answer, reports the upstream sent just before it may still be on their way
/// through the notification handler (a separate task from the answer's): this long is
/// given to them, so the client sees every report before the result.
const LAST_REPORTS: Duration = Duration::from_millis(5);

/// Why an upstream call did not produce a result. The text is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} is not connected (it is being restarted); try again")]
    NotConnected(String),
    #[error("upstream {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("upstream {0} failed: {1}")]
    Failed(String, String),
}

impl UpstreamError {
    /// The `kind` label of `arbiter_mcp_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NotConnected(_) => "not_connected",
            UpstreamError::Timeout(..) => "timeout",
            UpstreamError::Failed(..) => "failed",
        }
    }
}

pub struct Upstream {
    pub name: String,
    /// Cost of one call of each tool (by the upstream's own name), in micro-USD.
    pub prices: std::collections::BTreeMap<String, u64>,
    /// Whether allowed calls carry their receipt in `_meta` (`upstreams[].receipts`).
    pub receipts: bool,
    peer: watch::Receiver<Option<Peer<RoleClient>>>,
    timeout: Duration,
    /// Routes the upstream's progress reports to the call that is waiting for them; it
    /// outlives reconnections (each connection's handler holds a clone).
    progress: ProgressDispatcher,
    /// The calls in flight, for the upstream's log messages (`logs.rs`).
    logs: Arc<LogRoutes>,
}

/// What a call's client asked to be told while the call runs: progress under its own
/// token, log messages at or above its level.
pub struct ClientSink {
    pub client: Peer<RoleServer>,
    pub progress: Option<ProgressToken>,
    #[allow(deprecated)] // logging: see logs.rs
    pub log_level: Option<rmcp::model::LoggingLevel>,
}

impl ClientSink {
    /// Passes one upstream report on under the client's token (the upstream's token is
    /// the gateway's own and means nothing to the client).
    async fn progress(&self, report: ProgressNotificationParam) {
        let Some(token) = &self.progress else { return };
        let mut p = ProgressNotificationParam::new(token.clone(), report.progress);
        p.total = report.total;
        p.message = report.message;
        // A client that went away is noticed by the call itself; nothing to do here.
        let _ = self.client.notify_progress(p).await;
    }

    #[allow(deprecated)] // logging: see logs.rs
    async fn log(&self, message: LoggingMessageNotificationParam) {
        let Some(wanted) = self.log_level else { return };
        if crate::logs::passes(message.level, wanted) {
            let _ = self.client.notify_logging_message(message).await;
        }
    }
}

impl Upstream {
    /// Starts the supervisor; the first connection is made in the background.
    pub fn start(config: &UpstreamConfig, timeout: Duration, stop: CancellationToken) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        let name = config.name.clone();
        let progress = ProgressDispatcher::new();
        let logs = Arc::new(LogRoutes::default());
        let relay = Relay {
            ordered: Ordered::new(logs.clone(), progress.clone()),
        };
        tokio::spawn(supervise(name.clone(), config.transport(), relay, tx, stop));
        Arc::new(Self {
            name,
            prices: config.prices.clone(),
            receipts: config.receipts,
            peer: rx,
            timeout,
            progress,
            logs,
        })
    }

    /// Waits (bounded) for the first connection, so a misconfigured upstream is
    /// reported at start rather than on the first call.
    pub async fn ready(&self, wait: Duration) -> bool {
        self.live_peer(wait).await.is_some()
    }

    async fn live_peer(&self, wait: Duration) -> Option<Peer<RoleClient>> {
        let mut rx = self.peer.clone();
        let found = tokio::time::timeout(wait, rx.wait_for(|p| p.is_some())).await;
        match found {
            Ok(Ok(p)) => p.clone(),
            _ => None,
        }
    }

    async fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        self.live_peer(RECONNECT_WAIT)
            .await
            .ok_or_else(|| UpstreamError::NotConnected(self.name.clone()))
    }

    pub async fn list_tools(&self) -> Result<Vec<Tool>, UpstreamError> {
        let peer = self.peer().await?;
        self.bounded(peer.list_all_tools()).await
    }

    /// Calls one tool (with `meta` as the request's `_meta`), relaying its progress and
    /// log messages to `sink` when the client asked for them. Dropping the returned
    /// future (the client cancelled or left) or running out of time cancels the call
    /// upstream.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        meta: Option<JsonObject>,
        sink: Option<ClientSink>,
    ) -> Result<CallToolResult, UpstreamError> {
        let peer = self.peer().await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        params.meta = meta.map(|m| RequestMetaObject(MetaObject(m)));
        self.bounded(self.relayed(peer, params, sink)).await
    }

    async fn relayed(
        &self,
        peer: Peer<RoleClient>,
        params: CallToolRequestParams,
        sink: Option<ClientSink>,
    ) -> Result<CallToolResult, ServiceError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // rmcp gives every request a fresh progress token of the gateway's own (chosen
        // inside the send, so the subscription can only follow it); the dispatcher
        // routes reports carrying it here. A report needs the upstream's round trip,
        // far longer than the subscription, so none is missed in practice.
        // In flight from here, for the attribution of log messages (`logs.rs`).
        let logs = self.logs.open();
        let handle = peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await?;
        let mut guard = CancelOnDrop {
            peer: peer.clone(),
            id: Some(handle.id.clone()),
        };
        let answer = match sink {
            None => handle.await_response().await,
            Some(sink) => {
                let reports = self.progress.subscribe(handle.progress_token.clone()).await;
                relaying(handle.await_response(), reports, logs, &sink).await
            }
        };
        guard.id = None;
        match answer? {
            ServerResult::CallToolResult(result) => Ok(result),
            // A result with nothing in it parses as the empty result.
            ServerResult::EmptyResult(_) => Ok(CallToolResult::default()),
            _ => Err(ServiceError::UnexpectedResponse),
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, UpstreamError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(UpstreamError::Timeout(self.name.clone(), self.timeout)),
            Ok(Err(e)) => Err(UpstreamError::Failed(self.name.clone(), e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// Waits for the answer, relaying each report and log message as it comes; then those
/// sent just before the answer, so they reach the client before the result.
async fn relaying<T>(
    answer: impl std::future::Future<Output = T>,
    mut reports: ProgressSubscriber,
    mut logs: LogRoute,
    sink: &ClientSink,
) -> T {
    tokio::pin!(answer);
    let answer = loop {
        tokio::select! {
            answer = &mut answer => break answer,
            Some(report) = reports.next() => sink.progress(report).await,
            Some(message) = logs.messages.recv() => sink.log(message).await,
        }
    };
    loop {
        tokio::select! {
            Some(report) = reports.next() => sink.progress(report).await,
            Some(message) = logs.messages.recv() => sink.log(message).await,
            _ = tokio::time::sleep(LAST_REPORTS) => break,
        }
    }
    answer
}

/// Sends `notifications/cancelled` for a call still in flight when its future is
/// dropped, so an upstream stops work nobody waits for any more.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let peer = self.peer.clone();
        let cancelled = CancelledNotificationParam::new(
            Some(id),
            Some("the gateway's client is no longer waiting".into()),
        );
        // Drop cannot await; the runtime is there because the call ran on it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = peer.notify_cancelled(cancelled).await;
            });
        }
    }
}

/// The gateway's side of an upstream connection: the default client, its transport
/// wrapped so progress reports and log messages reach the call they belong to in the
/// order the upstream sent them (`in_order.rs`).
#[derive(Clone)]
struct Relay {
    ordered: Ordered,
}

impl ClientHandler for Relay {}

/// Asks a legacy upstream that offers logging for every level once per connection:
/// one connection serves every client, so each call's client level is applied by the
/// gateway (`ClientSink::log`), and 2026-07-28 upstreams get the level per request.
#[allow(deprecated)] // logging: see logs.rs
async fn open_logging(name: &str, peer: &Peer<RoleClient>) {
    let offers = peer
        .peer_info()
        .is_some_and(|info| info.capabilities.logging.is_some());
    if !offers {
        return;
    }
    let all = rmcp::model::SetLevelRequestParams::new(rmcp::model::LoggingLevel::Debug);
    // Bounded: a server that never answers must not keep its tools unreachable.
    match tokio::time::timeout(RECONNECT_WAIT, peer.set_level(all)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(upstream = %name, error = %e, "logging/setLevel refused; relaying what it sends")
        }
        Err(_) => {
            tracing::warn!(upstream = %name, "logging/setLevel unanswered; relaying what it sends")
        }
    }
}

type Client = RunningService<RoleClient, Relay>;

async fn supervise(
    name: String,
    transport: Transport,
    relay: Relay,
    tx: watch::Sender<Option<Peer<RoleClient>>>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = connect(&transport, relay.clone(), stop.child_token()) => c,
        };
        match connected {
            Ok(client) => {
                tracing::info!(upstream = %name, "upstream connected");
                open_logging(&name, client.peer()).await;
                tx.send_replace(Some(client.peer().clone()));
                let since = Instant::now();
                // The service ends when the transport closes or `stop` cancels it.
                let ended = client.waiting().await;
                tx.send_replace(None);
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(upstream = %name, reason = ?ended, "upstream connection ended; restarting");
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %name, error = format!("{e:#}"), retry_in = ?backoff, "upstream unreachable");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    transport: &Transport,
    relay: Relay,
    ct: CancellationToken,
) -> anyhow::Result<Client> {
    match transport {
        Transport::Stdio(s) => connect_stdio(s, relay, ct).await,
        Transport::Http(h) => connect_http(h, relay, ct).await,
    }
}

async fn connect_stdio(
    s: &StdioConfig,
    relay: Relay,
    ct: CancellationToken,
) -> anyhow::Result<Client> {
    let mut cmd = tokio::process::Command::new(&s.command);
    cmd.args(&s.args).envs(&s.env).kill_on_drop(true);
    if let Some(cwd) = &s.cwd {
        cmd.current_dir(cwd);
    }
    let child = TokioChildProcess::new(cmd).with_context(|| format!("starting {}", s.command))?;
    let transport = relay.ordered.wrap(child);
    relay
        .serve_with_ct(transport, ct)
        .await
        .with_context(|| format!("MCP handshake with {}", s.command))
}

async fn connect_http(
    h: &HttpConfig,
    relay: Relay,
    ct: CancellationToken,
) -> anyhow::Result<Client> {
    let mut headers = HashMap::new();
    for (k, v) in &h.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header name {k:?}"))?;
        let value = HeaderValue::from_str(v).with_context(|| format!("header {k}: value"))?;
        headers.insert(name, value);
    }
    let config =
        StreamableHttpClientTransportConfig::with_uri(h.url.as_str()).custom_headers(headers);
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(h.tls_ca.as_deref())?)
        .build()
        .context("building the HTTP client")?;
    let transport = relay
        .ordered
        .wrap(StreamableHttpClientTransport::with_client(http, config));
    relay
        .serve_with_ct(transport, ct)
        .await
        .with_context(|| format!("MCP handshake with {}", h.url))
}

/// rustls with ring, trusting only the configured CA (an https:// upstream without one
/// fails its handshake: no system roots are trusted implicitly).
fn tls_config(ca: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding {}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
