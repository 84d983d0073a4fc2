//! The policy bundle as written in YAML. Every struct refuses unknown keys, so a typo
//! is an error that names the path instead of a silently ignored rule.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Bundle format version; only 1 exists.
    pub version: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub defaults: DefaultsFile,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceFile>,
    #[serde(default)]
    pub actions: Vec<ActionRuleFile>,
    #[serde(default)]
    pub agents: Vec<AgentRuleFile>,
    #[serde(default)]
    pub budgets: Vec<BudgetFile>,
    #[serde(default)]
    pub audit: AuditFile,
    #[serde(default)]
    pub watchdog: WatchdogFile,
    #[serde(default)]
    pub mcp: McpFile,
}

/// The MCP gateway's tool pinning (docs/mcp.md): what a first-seen tool definition gets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpFile {
    /// For every upstream server: "trust" (on first use, the default) or "approve".
    pub first_seen: Option<String>,
    /// Per upstream server (the gateway's `upstreams[].name`).
    #[serde(default)]
    pub servers: BTreeMap<String, McpServerFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerFile {
    pub first_seen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogFile {
    /// Silence after the last heartbeat that marks an agent unresponsive (default 5m).
    pub unresponsive_after: Option<String>,
    /// Silence that halts an agent that has sent heartbeats (off when absent).
    pub halt_silent_after: Option<String>,
    /// Halt an agent whose recorded spend went over a budget cap.
    #[serde(default)]
    pub halt_over_budget: bool,
    /// Halt an agent when its loop guard trips.
    #[serde(default)]
    pub halt_looping: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsFile {
    pub trust_level: Option<String>,
    pub required_trust: Option<String>,
    pub consent: Option<ConsentDefault>,
    pub reservation_ttl: Option<String>,
    pub trust_decay_days: Option<u32>,
    pub request_id_retention: Option<String>,
    pub approval_ttl: Option<String>,
    /// Who may approve for an agent with no registered operator: "any_operator" or "nobody".
    pub approval_without_operator: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentDefault {
    Deny,
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// USD per million input tokens, as a decimal string.
    pub input: serde_norway::Value,
    /// USD per million output tokens, as a decimal string.
    pub output: serde_norway::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub tool: Option<String>,
    pub api: Option<String>,
    pub model: Option<String>,
    /// Conditions on the call's arguments, by dotted path: a value (equality) or a map
    /// of operators (see `policy::arguments`).
    pub arguments: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRuleFile {
    #[serde(rename = "match")]
    pub matcher: MatchFile,
    pub trust: Option<String>,
    #[serde(default)]
    pub critical: bool,
    pub approval: Option<String>,
    #[serde(default)]
    pub irreversible: bool,
    #[serde(default)]
    pub external: bool,
    /// Matching actions are denied (`scope.action_denied`).
    #[serde(default)]
    pub deny: bool,
    /// Why, for people: quoted in the denial and the approval request.
    pub reason: Option<String>,
    /// The category the policy puts matching actions in (trust scopes, category budgets).
    pub category: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowDenyFile {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub hidden: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopGuardFile {
    pub max_calls: u32,
    pub window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRuleFile {
    /// Agent id or glob.
    pub id: String,
    #[serde(default)]
    pub tools: AllowDenyFile,
    #[serde(default)]
    pub apis: AllowDenyFile,
    #[serde(default)]
    pub models: Vec<String>,
    pub loop_guard: Option<LoopGuardFile>,
    /// Keeps working under HALT_NONCRITICAL.
    #[serde(default)]
    pub critical: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    pub name: String,
    pub scope: String,
    #[serde(default)]
    pub agents: Vec<String>,
    pub category: Option<String>,
    pub period: String,
    pub max_usd: Option<serde_norway::Value>,
    pub max_tokens: Option<u64>,
    pub max_calls: Option<u64>,
    pub max_session_seconds: Option<u64>,
    #[serde(default)]
    pub fail_open: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// Context and metadata keys stored only as keyed digests ("digest") or not at all ("drop").
    #[serde(default)]
    pub sensitive_keys: BTreeMap<String, String>,
}
