//! Policy bundles: load a YAML file, validate it strictly, compile it into a
//! [`CompiledPolicy`] with pre-built glob sets and a version hash. A reload swaps the
//! whole compiled policy at once (see `loader`).

mod arguments;
mod compile;
pub mod loader;
pub mod model;
mod prices;
#[cfg(test)]
mod props;

pub use arguments::{ArgMatcher, Fault};
pub use compile::{compile, PolicyError};
pub use prices::{Price, PriceTable};

use crate::domain::{Action, ApiPattern, GlobList, MicroUsd, Period, TrustLevel};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the policy says when no rule is more specific.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub trust_level: TrustLevel,
    pub required_trust: TrustLevel,
    pub consent_allow: bool,
    pub reservation_ttl: Duration,
    pub trust_decay_days: u32,
    pub request_id_retention: Duration,
    pub approval_ttl: Duration,
    /// Whether any operator may approve for an agent that has no registered operator.
    pub approval_without_operator: bool,
}

/// How an action rule asks for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Ask only when trust escalation applies (the default).
    Escalate,
    Always,
    Never,
}

/// Properties of actions matched by tool, API or model.
#[derive(Debug, Clone)]
pub struct ActionRule {
    pub tool: Option<GlobList>,
    pub api: Option<ApiPattern>,
    pub model: Option<GlobList>,
    pub trust: Option<TrustLevel>,
    pub critical: bool,
    pub approval: ApprovalMode,
    pub irreversible: bool,
    pub external: bool,
    /// Conditions on the call's arguments; all must hold.
    pub arguments: Vec<ArgMatcher>,
    /// Matching actions are denied in the scope stage (`scope.action_denied`).
    pub deny: bool,
    /// The rule's `reason`, quoted where it decides.
    pub reason: Option<String>,
    /// Position in `actions`, for messages (`actions[3]`).
    pub index: usize,
    /// The category this rule classifies matching actions into: it selects trust
    /// assignments scoped to it (for the facets the rule covers) and category budgets.
    pub category: Option<String>,
}

impl ActionRule {
    /// A rule matches when every matcher it names matches the action. Argument
    /// conditions the arguments cannot answer count as no match here: `argument_fault`
    /// reports them and the scope stage denies such an action.
    pub fn matches(&self, action: &Action) -> bool {
        self.matches_target(action)
            && self
                .arguments
                .iter()
                .all(|m| m.eval(action.arguments.as_ref()) == Ok(true))
    }

    /// The first argument condition this rule cannot evaluate for an action whose tool,
    /// API and model it matches.
    pub fn argument_fault(&self, action: &Action) -> Option<Fault> {
        if self.arguments.is_empty() || !self.matches_target(action) {
            return None;
        }
        self.arguments
            .iter()
            .find_map(|m| m.eval(action.arguments.as_ref()).err())
    }

    fn matches_target(&self, action: &Action) -> bool {
        let tool_ok = self
            .tool
            .as_ref()
            .is_none_or(|g| action.tool.as_deref().is_some_and(|t| g.is_match(t)));
        let api_ok = self.api.as_ref().is_none_or(|p| {
            action
                .api
                .as_ref()
                .is_some_and(|a| p.matches(&a.method, &a.url))
        });
        let model_ok = self
            .model
            .as_ref()
            .is_none_or(|g| action.model.as_deref().is_some_and(|m| g.is_match(m)));
        tool_ok && api_ok && model_ok
    }

    /// Whether this rule, matching `action`, speaks for that facet of it: a rule covers
    /// only the facets its `match` names. `{tool: escalate_to_human}` says nothing about
    /// an API call or a model the same action also makes.
    pub fn covers(&self, action: &Action, facet: Facet) -> bool {
        self.matches(action)
            && match facet {
                Facet::Tool => self.tool.is_some(),
                Facet::Api => self.api.is_some(),
                Facet::Model => self.model.is_some(),
                // No matcher selects data accesses, so no rule speaks for one.
                Facet::Data => false,
            }
    }
}

/// One thing an action does. A property that exempts or classifies an action (critical,
/// a category) holds for the action only if it holds for every facet: otherwise a
/// harmless facet would carry any other facet along with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facet {
    Tool,
    Api,
    Model,
    /// Reading personal data (`action.data`).
    Data,
}

/// The facets of an action. The destructuring names every field, so a new field of
/// `Action` does not compile until someone decides here whether it is something the
/// action does.
pub fn facets(action: &Action) -> Vec<Facet> {
    let Action {
        tool,
        api,
        model,
        // The size and cost of the model call, not something of their own.
        max_tokens: _,
        estimate: _,
        data,
        // Labels the caller puts on the action (8.2, 8.3), not things it does.
        category: _,
        budget: _,
        // The arguments of the tool or API call: they qualify that facet (rules match
        // on them together with it), they are not something done on their own.
        arguments: _,
    } = action;
    let mut out = Vec::new();
    if tool.is_some() {
        out.push(Facet::Tool);
    }
    if api.is_some() {
        out.push(Facet::Api);
    }
    if model.is_some() {
        out.push(Facet::Model);
    }
    if !data.is_empty() {
        out.push(Facet::Data);
    }
    out
}

/// Allow/deny lists for one kind of target. Deny wins; hidden tools are also denied.
#[derive(Debug, Clone)]
pub struct ToolScope {
    pub allow: GlobList,
    pub deny: GlobList,
    pub hidden: GlobList,
}

#[derive(Debug, Clone)]
pub struct ApiScope {
    pub allow: Vec<ApiPattern>,
    pub deny: Vec<ApiPattern>,
}

#[derive(Debug, Clone, Copy)]
pub struct LoopGuard {
    pub max_calls: u32,
    pub window: Duration,
}

/// Scope for the agents whose id matches `id`.
#[derive(Debug, Clone)]
pub struct AgentRule {
    pub id_pattern: String,
    pub id: GlobList,
    pub tools: ToolScope,
    pub apis: ApiScope,
    /// Allowed models; `None` when the rule lists none (then no model is allowed).
    pub models: GlobList,
    pub loop_guard: Option<LoopGuard>,
    /// Keeps working under HALT_NONCRITICAL.
    pub critical: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Agent,
    Session,
    Category,
    Global,
}

impl BudgetScope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Session => "session",
            Self::Category => "category",
            Self::Global => "global",
        }
    }
}

/// Caps of one budget. A `None` cap does not limit that dimension.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub micro_usd: Option<MicroUsd>,
    pub tokens: Option<u64>,
    pub calls: Option<u64>,
    pub session_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub name: String,
    pub scope: BudgetScope,
    pub agents: GlobList,
    pub category: Option<String>,
    pub period: Period,
    pub caps: Caps,
    pub fail_open: bool,
}

/// How a sensitive context key is written into audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    Digest,
    Drop,
}

/// The source name of the built-in empty policy.
const EMPTY_SOURCE: &str = "<none>";

/// A validated, compiled policy bundle. Immutable; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `sha256:<hex>` of the bundle's bytes.
    pub version: String,
    /// Where it came from ("<none>" for the built-in empty policy).
    pub source: String,
    /// The exact bytes it was compiled from: what a replica publishes to the others
    /// through a shared database, which compile them to the same version.
    pub bundle: Arc<[u8]>,
    pub name: Option<String>,
    pub defaults: Defaults,
    pub prices: PriceTable,
    pub actions: Vec<ActionRule>,
    pub agents: Vec<AgentRule>,
    pub budgets: Vec<Budget>,
    pub sensitive_keys: BTreeMap<String, Redaction>,
    pub watchdog: Watchdog,
    pub mcp: McpPolicy,
}

/// What a tool definition an MCP gateway reports for the first time gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstSeen {
    /// Pinned as reported (trust on first use).
    #[default]
    Trust,
    /// Hidden until an operator approves it.
    Approve,
    /// Trusted on first use only when its annotations declare it read-only
    /// (`readOnlyHint: true`, `destructiveHint` not true); any other waits for an
    /// operator. Annotations are the server's own claims: they can narrow trust on
    /// first use, never widen it.
    TrustReadOnly,
}

/// Tool pinning settings per upstream server (docs/mcp.md).
#[derive(Debug, Clone, Default)]
pub struct McpPolicy {
    pub first_seen: FirstSeen,
    pub servers: BTreeMap<String, FirstSeen>,
}

impl McpPolicy {
    pub fn first_seen(&self, server: &str) -> FirstSeen {
        self.servers.get(server).copied().unwrap_or(self.first_seen)
    }
}

/// What the watchdog does without the agent's cooperation.
#[derive(Debug, Clone)]
pub struct Watchdog {
    pub unresponsive_after: Duration,
    pub halt_silent_after: Option<Duration>,
    pub halt_over_budget: bool,
    pub halt_looping: bool,
}

impl CompiledPolicy {
    /// The policy served when no bundle is configured: every agent is denied with
    /// `scope.no_policy`.
    pub fn empty() -> Self {
        compile(b"version: 1\n", EMPTY_SOURCE).expect("the empty policy compiles")
    }

    /// Whether this is the built-in empty policy rather than a loaded bundle.
    pub fn is_builtin(&self) -> bool {
        self.source == EMPTY_SOURCE
    }

    /// The agent rule for an id: an exact id wins, else the first glob in file order.
    pub fn agent_rule(&self, agent_id: &str) -> Option<&AgentRule> {
        self.agents
            .iter()
            .find(|r| r.id_pattern == agent_id)
            .or_else(|| self.agents.iter().find(|r| r.id.is_match(agent_id)))
    }

    pub fn action_rules<'a>(
        &'a self,
        action: &'a Action,
    ) -> impl Iterator<Item = &'a ActionRule> + 'a {
        self.actions.iter().filter(move |r| r.matches(action))
    }

    /// A critical action: every facet it has is covered by a matching rule marked
    /// `critical: true`. An action with no facet at all is not critical.
    pub fn is_critical_action(&self, action: &Action) -> bool {
        let facets = facets(action);
        !facets.is_empty()
            && facets.iter().all(|&f| {
                self.actions
                    .iter()
                    .any(|r| r.critical && r.covers(action, f))
            })
    }

    /// The categories the policy classifies an action into: those of every matching
    /// action rule, in file order (with repeats).
    pub fn categories<'a>(&'a self, action: &'a Action) -> impl Iterator<Item = &'a str> + 'a {
        self.action_rules(action)
            .filter_map(|r| r.category.as_deref())
    }

    /// The categories whose rules cover one facet of an action.
    pub fn categories_covering<'a>(
        &'a self,
        action: &'a Action,
        facet: Facet,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.actions
            .iter()
            .filter(move |r| r.covers(action, facet))
            .filter_map(|r| r.category.as_deref())
    }

    pub fn budget(&self, name: &str) -> Option<&Budget> {
        self.budgets.iter().find(|b| b.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApiCall;

    const BUNDLE: &str = r#"
version: 1
actions:
  - match: {tool: escalate_to_human}
    critical: true
  - match: {api: "POST https://pager.example.com/**"}
    critical: true
    category: paging
"#;

    fn action(tool: Option<&str>, url: Option<&str>, model: Option<&str>) -> Action {
        Action {
            tool: tool.map(Into::into),
            api: url.map(|u| ApiCall {
                method: "POST".into(),
                url: u.into(),
            }),
            model: model.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn an_action_is_critical_only_if_every_facet_is_covered() {
        let p = compile(BUNDLE.as_bytes(), "t.yaml").unwrap();
        let page = "https://pager.example.com/v1";
        assert!(p.is_critical_action(&action(Some("escalate_to_human"), None, None)));
        assert!(p.is_critical_action(&action(Some("escalate_to_human"), Some(page), None)));
        assert!(!p.is_critical_action(&action(
            Some("escalate_to_human"),
            Some("https://api.example.com/x"),
            None
        )));
        assert!(!p.is_critical_action(&action(Some("escalate_to_human"), None, Some("m"))));
        assert!(!p.is_critical_action(&Action::default()));
        let mut with_data = action(Some("escalate_to_human"), None, None);
        with_data.data.push(crate::domain::DataAccess {
            data_type: "email".into(),
            purpose: None,
        });
        assert!(!p.is_critical_action(&with_data));
    }

    #[test]
    fn a_category_covers_only_the_facets_its_rule_matches() {
        let p = compile(BUNDLE.as_bytes(), "t.yaml").unwrap();
        let a = action(Some("x"), Some("https://pager.example.com/v1"), None);
        assert_eq!(p.categories(&a).collect::<Vec<_>>(), ["paging"]);
        assert_eq!(
            p.categories_covering(&a, Facet::Api).collect::<Vec<_>>(),
            ["paging"]
        );
        assert_eq!(p.categories_covering(&a, Facet::Tool).count(), 0);
    }
}
