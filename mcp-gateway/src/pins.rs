//! Tool pinning (tool-poisoning and rug-pull defence): every upstream tool definition
//! the gateway reads is reported to Arbiter (`ReportTools`, with the client's key),
//! which hashes it and answers whether that exact definition is trusted. Only trusted
//! definitions are listed, and a call is forwarded only while the definition the
//! gateway last read for that tool is trusted (docs/mcp.md, "Tool pinning").

use crate::gateway::Gateway;
use crate::identity::Caller;
use crate::upstream::Upstream;
use arbiter_client::proto;
use rmcp::model::{ErrorData, Tool};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// ReportTools takes at most this many definitions per call.
const REPORT_CHUNK: usize = 1024;
/// The parts of a tool definition that are pinned: what the model reads (name, title,
/// description, schemas) and the hints a client acts on. `_meta` and icons are not.
const PINNED_KEYS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// Why a tool is not shown or called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Never trusted: first seen on a server whose policy wants an operator, or rejected.
    Unapproved,
    /// Differs from the trusted definition and waits for (or was refused) an operator.
    Changed,
}

impl Untrusted {
    /// The denial code a refused call gets.
    pub fn code(self) -> &'static str {
        match self {
            Untrusted::Unapproved => "mcp.tool_unapproved",
            Untrusted::Changed => "mcp.tool_changed",
        }
    }
}

/// The pinned part of a definition, as JSON text (Arbiter canonicalizes it).
pub fn definition(tool: &Tool) -> String {
    let full = serde_json::to_value(tool).unwrap_or_default();
    let mut kept = Map::new();
    if let Value::Object(map) = full {
        for key in PINNED_KEYS {
            if let Some(v) = map.get(key) {
                kept.insert(key.to_owned(), v.clone());
            }
        }
    }
    Value::Object(kept).to_string()
}

/// Arbiter's verdict per tool name for one upstream's definitions.
pub async fn verdicts(
    caller: &Caller,
    server: &str,
    tools: &[Tool],
) -> Result<HashMap<String, Option<Untrusted>>, ErrorData> {
    let mut out = HashMap::new();
    for chunk in tools.chunks(REPORT_CHUNK) {
        let answer = caller
            .arbiter
            .report_tools(proto::ReportToolsRequest {
                agent_id: caller.agent.clone(),
                server: server.to_owned(),
                tools: chunk
                    .iter()
                    .map(|t| proto::ToolDefinition {
                        name: t.name.to_string(),
                        definition_json: definition(t),
                    })
                    .collect(),
            })
            .await
            .map_err(crate::answer::undecided)?;
        for v in answer.tools {
            let trusted = v.state == proto::ToolPinState::Trusted as i32;
            let why = match (trusted, v.trusted_digest.is_empty()) {
                (true, _) => None,
                (false, true) => Some(Untrusted::Unapproved),
                (false, false) => Some(Untrusted::Changed),
            };
            out.insert(v.name, why);
        }
    }
    Ok(out)
}

/// An upstream's tools that Arbiter trusts, in upstream order; the definitions read
/// are remembered for the calls that follow.
pub async fn screen(
    gw: &Gateway,
    caller: &Caller,
    upstream: &Upstream,
    tools: Vec<Tool>,
) -> Result<Vec<Tool>, ErrorData> {
    let verdicts = verdicts(caller, &upstream.name, &tools).await?;
    gw.remember_definitions(&upstream.name, &tools);
    Ok(tools
        .into_iter()
        .filter(|t| verdicts.get(t.name.as_ref()).is_some_and(Option::is_none))
        .collect())
}

/// Whether a call of `tool` may go on: the definition last read from the upstream (read
/// now if the gateway has none) must be trusted. `Err` when there is no such tool or
/// Arbiter cannot answer.
pub async fn check_call(
    gw: &Gateway,
    caller: &Caller,
    upstream: &Upstream,
    tool: &str,
    exposed: &str,
) -> Result<Option<Untrusted>, ErrorData> {
    let known = match gw.definition_of(&upstream.name, tool) {
        Some(t) => t,
        None => {
            let listed = upstream
                .list_tools()
                .await
                .map_err(crate::answer::upstream)?;
            gw.remember_definitions(&upstream.name, &listed);
            listed
                .into_iter()
                .find(|t| t.name == tool)
                .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool {exposed}"), None))?
        }
    };
    let verdicts = verdicts(caller, &upstream.name, std::slice::from_ref(&known)).await?;
    // No verdict for a reported tool is no decision: refuse (fail closed).
    verdicts.get(tool).copied().ok_or_else(|| {
        crate::answer::undecided(format!("Arbiter gave no verdict on tool {exposed}"))
    })
}
