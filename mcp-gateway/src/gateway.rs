//! The MCP server the clients see: an rmcp `ServerHandler` whose `tools/list` merges the
//! upstreams' tools and keeps only those Arbiter's `FilterTools` lets the caller see, and
//! whose `tools/call` asks Arbiter first (`call.rs`).

use crate::identity::Caller;
use crate::upstream::Upstream;
use axum::http::request::Parts;
#[allow(deprecated)] // logging: see logs.rs
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, ErrorData, ListToolsResult, LoggingLevel,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscriptionFilter, Tool,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::ServerHandler;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header a client may send to name its run when there is no MCP session (the
/// 2026-07-28 revision, or a stateless client). Arbiter checks its format.
pub const SESSION_HEADER: &str = "arbiter-session-id";
/// FilterTools takes at most this many names per call.
const FILTER_CHUNK: usize = 1024;
/// How long a client may cache a filtered tools/list (it is private to the caller).
const LIST_TTL_MS: u64 = 5_000;
/// Bound on remembered (session → agent) bindings and held approvals.
const MEMORY_MAX: usize = 100_000;

#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub upstreams: Vec<Arc<Upstream>>,
    pub approval_wait: Duration,
    /// How often a listed session's tools are filtered again (`watch.rs`); 0 = never.
    pub list_watch: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set in stdio mode: one caller and one run for the whole process.
    pub fixed: Option<(Caller, String)>,
    /// Seals and opens the `requestState` of 2026-07-28 `input_required` answers.
    pub sealer: crate::state::Sealer,
    /// The operator console (`console_url`), whose approval pages a waiting call's
    /// 2026-07-28 client may be pointed at.
    pub console_url: Option<String>,
    /// Which agent first used each session id: a session is bound to its principal's
    /// agent, so one client cannot act inside another agent's run.
    sessions: Mutex<HashMap<String, String>>,
    /// Approvals asked for and not yet used, by (agent, tool, arguments digest): the
    /// agent's retry of the same call presents the approval, and no other call can.
    /// Arbiter binds an approval to the agent and the action digest, not to a session,
    /// so a retry after a reconnect (a new MCP session) still finds it.
    pub held: Mutex<HashMap<HeldKey, String>>,
    /// What each watched MCP connection was last shown (`watch.rs`).
    pub watched: Mutex<HashMap<String, Vec<String>>>,
    /// The tool definitions last read from each upstream (by upstream, then tool): a
    /// call is checked against the definition the gateway last read (`pins.rs`).
    definitions: Mutex<HashMap<String, HashMap<String, Tool>>>,
    /// The log level each legacy connection asked for with `logging/setLevel` (`logs.rs`).
    #[allow(deprecated)] // logging: see logs.rs
    log_levels: Mutex<HashMap<String, LoggingLevel>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeldKey {
    pub agent: String,
    pub tool: String,
    pub arguments: String,
}

impl Gateway {
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        approval_wait: Duration,
        list_watch: Duration,
        metrics: Arc<crate::metrics::Metrics>,
        fixed: Option<(Caller, String)>,
        sealer: crate::state::Sealer,
        console_url: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstreams,
                approval_wait,
                list_watch,
                metrics,
                fixed,
                sealer,
                console_url,
                sessions: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashMap::new()),
                definitions: Mutex::new(HashMap::new()),
                log_levels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The exposed name of an upstream tool: `<server>.<tool>` with several upstreams.
    pub(crate) fn exposed(&self, upstream: &str, tool: &str) -> String {
        if self.inner.upstreams.len() > 1 {
            format!("{upstream}.{tool}")
        } else {
            tool.to_owned()
        }
    }

    /// The upstream and its own tool name for an exposed name.
    pub(crate) fn route(&self, exposed: &str) -> Option<(Arc<Upstream>, String)> {
        let ups = &self.inner.upstreams;
        if ups.len() == 1 {
            return Some((ups[0].clone(), exposed.to_owned()));
        }
        let (server, tool) = exposed.split_once('.')?;
        ups.iter()
            .find(|u| u.name == server)
            .map(|u| (u.clone(), tool.to_owned()))
    }

    /// The caller and its Arbiter session for one request.
    pub(crate) fn caller(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<(Caller, String), ErrorData> {
        if let Some(fixed) = &self.inner.fixed {
            return Ok(fixed.clone());
        }
        let parts = ctx.extensions.get::<Parts>();
        let caller = parts
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
            // The HTTP layer authenticates every request before rmcp sees it.
            .ok_or_else(|| {
                ErrorData::internal_error("request reached the gateway unauthenticated", None)
            })?;
        let header = |name: &str| {
            parts
                .and_then(|p| p.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // A client that names its run keeps it across MCP sessions (reconnects).
        let session = header(SESSION_HEADER)
            .or_else(|| header("mcp-session-id"))
            .unwrap_or_default();
        self.bind_session(&caller.agent, &session)?;
        Ok((caller, session))
    }

    /// The key of the MCP connection a request came on (its notifications go there):
    /// the MCP session over HTTP, the process's run in stdio mode, else none.
    pub(crate) fn connection(&self, ctx: &RequestContext<RoleServer>, session: &str) -> String {
        if self.inner.fixed.is_some() {
            return session.to_owned();
        }
        ctx.extensions
            .get::<Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) fn bind_session(&self, agent: &str, session: &str) -> Result<(), ErrorData> {
        if session.is_empty() {
            return Ok(());
        }
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if sessions.len() >= MEMORY_MAX && !sessions.contains_key(session) {
            sessions.clear();
        }
        match sessions
            .entry(session.to_owned())
            .or_insert_with(|| agent.to_owned())
        {
            owner if owner == agent => Ok(()),
            _ => Err(ErrorData::invalid_request(
                "this session belongs to another agent; start a new session",
                None,
            )),
        }
    }

    /// What a legacy connection asked for with `logging/setLevel`.
    #[allow(deprecated)] // logging: see logs.rs
    pub(crate) fn log_level(&self, connection: &str) -> Option<LoggingLevel> {
        if connection.is_empty() {
            return None;
        }
        let levels = self.inner.log_levels.lock().expect("log levels lock");
        levels.get(connection).copied()
    }

    #[allow(deprecated)] // logging: see logs.rs
    fn set_log_level(&self, connection: &str, level: LoggingLevel) {
        let mut levels = self.inner.log_levels.lock().expect("log levels lock");
        if levels.len() >= MEMORY_MAX && !levels.contains_key(connection) {
            levels.clear();
        }
        levels.insert(connection.to_owned(), level);
    }

    pub(crate) fn remember(&self, key: HeldKey, approval_id: String) {
        let mut held = self.inner.held.lock().expect("held lock");
        if held.len() >= MEMORY_MAX {
            held.clear();
        }
        held.insert(key, approval_id);
    }

    pub(crate) fn held(&self, key: &HeldKey) -> Option<String> {
        self.inner.held.lock().expect("held lock").get(key).cloned()
    }

    pub(crate) fn forget(&self, key: &HeldKey) {
        self.inner.held.lock().expect("held lock").remove(key);
    }

    /// Replaces what the gateway knows of an upstream's tool definitions.
    pub(crate) fn remember_definitions(&self, upstream: &str, tools: &[Tool]) {
        let known = tools
            .iter()
            .take(MEMORY_MAX)
            .map(|t| (t.name.to_string(), t.clone()))
            .collect();
        self.inner
            .definitions
            .lock()
            .expect("definitions lock")
            .insert(upstream.to_owned(), known);
    }

    pub(crate) fn definition_of(&self, upstream: &str, tool: &str) -> Option<Tool> {
        self.inner
            .definitions
            .lock()
            .expect("definitions lock")
            .get(upstream)
            .and_then(|m| m.get(tool))
            .cloned()
    }

    pub(crate) async fn list(&self, caller: &Caller) -> Result<Vec<Tool>, ErrorData> {
        let mut tools = Vec::new();
        for up in &self.inner.upstreams {
            match up.list_tools().await {
                Ok(list) => {
                    // Only definitions Arbiter trusts are shown (tool pinning).
                    let trusted = crate::pins::screen(self, caller, up, list).await?;
                    tools.extend(trusted.into_iter().map(|mut t| {
                        t.name = self.exposed(&up.name, &t.name).into();
                        t
                    }));
                }
                // One broken upstream must not hide the others' tools.
                Err(e) => tracing::warn!(upstream = %up.name, error = %e, "tools/list failed"),
            }
        }
        let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        let mut visible = HashSet::new();
        for chunk in names.chunks(FILTER_CHUNK) {
            let answer = caller
                .arbiter
                .filter_tools(arbiter_client::proto::FilterToolsRequest {
                    agent_id: caller.agent.clone(),
                    tools: chunk.to_vec(),
                })
                .await
                .map_err(crate::answer::undecided)?;
            visible.extend(answer.tools);
        }
        tools.retain(|t| visible.contains(t.name.as_ref()));
        Ok(tools)
    }
}

impl ServerHandler for Gateway {
    #[allow(deprecated)] // logging (relayed for legacy clients): see logs.rs
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info =
            rmcp::model::Implementation::new("arbiter-mcp-gateway", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Every tool call is decided by Arbiter; a denied call returns an error result naming the reason code."
                .to_owned(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (caller, session) = self.caller(&ctx)?;
        let tools = self.list(&caller).await?;
        crate::watch::track(
            self,
            &self.connection(&ctx, &session),
            ctx.peer.clone(),
            caller,
            crate::watch::names(&tools),
        );
        let mut result = ListToolsResult::with_all_items(tools).with_ttl_ms(LIST_TTL_MS);
        result.cache_scope = Some(CacheScope::Private);
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        crate::call::call_tool(self, request, ctx).await
    }

    /// `subscriptions/listen` (2026-07-28): `tools/list_changed` only (`watch.rs`).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(crate::watch::accepted(self, requested))
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        crate::watch::listen(self, subscription).await
    }

    /// A legacy session's level for the log messages of its calls (`logs.rs`); a
    /// request without a session (2026-07-28) names its level in `_meta` instead.
    #[allow(deprecated)] // logging: see logs.rs
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let (_, session) = self.caller(&ctx)?;
        let connection = self.connection(&ctx, &session);
        if !connection.is_empty() {
            self.set_log_level(&connection, request.level);
        }
        Ok(())
    }
}
