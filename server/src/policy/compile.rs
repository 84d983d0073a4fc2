use super::arguments::ArgMatcher;
use super::model::{AllowDenyFile, ConsentDefault, MatchFile, PolicyFile};
use super::{
    ActionRule, AgentRule, ApiScope, ApprovalMode, Budget, BudgetScope, Caps, CompiledPolicy,
    Defaults, LoopGuard, Price, PriceTable, Redaction, ToolScope,
};
use crate::domain::{ApiPattern, GlobList, MicroUsd, Period, TrustLevel};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Every problem found in a bundle, each naming the file and the path inside it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid policy {source_name}:\n  {}", problems.join("\n  "))]
pub struct PolicyError {
    pub source_name: String,
    pub problems: Vec<String>,
}

/// Collects problems as `path: problem` lines.
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, path: impl AsRef<str>, problem: impl AsRef<str>) {
        self.0
            .push(format!("{}: {}", path.as_ref(), problem.as_ref()));
    }
}

/// A YAML reader error as a problem with a place: the reader names the path below the
/// top level and usually the line; an error about the document as a whole (empty,
/// several documents, a missing top-level key) is placed at `(document)`.
fn reader_problem(e: &serde_norway::Error) -> String {
    let message = e.to_string();
    match e.location() {
        _ if message.contains(" at line ") => message,
        Some(l) => format!("{message} at line {} column {}", l.line(), l.column()),
        None => format!("(document): {message}"),
    }
}

/// Validates and compiles a bundle. `source` names the file in every error.
pub fn compile(bytes: &[u8], source: &str) -> Result<CompiledPolicy, PolicyError> {
    let fail = |problems: Vec<String>| PolicyError {
        source_name: source.to_owned(),
        problems,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| fail(vec![format!("not UTF-8: {e}")]))?;
    let file: PolicyFile =
        serde_norway::from_str(text).map_err(|e| fail(vec![reader_problem(&e)]))?;

    let mut p = Problems(Vec::new());
    if file.version != 1 {
        p.push("version", format!("must be 1, got {}", file.version));
    }

    let defaults = compile_defaults(&file, &mut p);
    let prices = compile_prices(&file, &mut p);
    let actions = compile_actions(&file, &mut p);
    let agents = compile_agents(&file, &mut p);
    let budgets = compile_budgets(&file, &mut p);
    let mut sensitive_keys = BTreeMap::new();
    for (key, mode) in &file.audit.sensitive_keys {
        match mode.as_str() {
            "digest" => {
                sensitive_keys.insert(key.clone(), Redaction::Digest);
            }
            "drop" => {
                sensitive_keys.insert(key.clone(), Redaction::Drop);
            }
            other => p.push(
                format!("audit.sensitive_keys.{key}"),
                format!("must be \"digest\" or \"drop\", got {other:?}"),
            ),
        }
    }

    let w = &file.watchdog;
    let watchdog = super::Watchdog {
        unresponsive_after: duration(
            &mut p,
            "watchdog.unresponsive_after",
            w.unresponsive_after.as_ref(),
            Duration::from_secs(300),
        ),
        halt_silent_after: w.halt_silent_after.as_ref().map(|d| {
            duration(
                &mut p,
                "watchdog.halt_silent_after",
                Some(d),
                Duration::from_secs(1800),
            )
        }),
        halt_over_budget: w.halt_over_budget,
        halt_looping: w.halt_looping,
    };
    let mcp = compile_mcp(&file.mcp, &mut p);
    if !p.0.is_empty() {
        return Err(fail(p.0));
    }
    Ok(CompiledPolicy {
        version: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        source: source.to_owned(),
        bundle: Arc::from(bytes),
        name: file.name,
        defaults,
        prices,
        actions,
        agents,
        budgets,
        sensitive_keys,
        watchdog,
        mcp,
    })
}

fn first_seen(p: &mut Problems, path: &str, value: Option<&String>) -> Option<super::FirstSeen> {
    match value.map(String::as_str) {
        None => None,
        Some("trust") => Some(super::FirstSeen::Trust),
        Some("approve") => Some(super::FirstSeen::Approve),
        Some("trust_read_only") => Some(super::FirstSeen::TrustReadOnly),
        Some(other) => {
            p.push(
                path,
                format!("must be \"trust\", \"approve\" or \"trust_read_only\", got {other:?}"),
            );
            None
        }
    }
}

fn compile_mcp(file: &super::model::McpFile, p: &mut Problems) -> super::McpPolicy {
    let default = first_seen(p, "mcp.first_seen", file.first_seen.as_ref()).unwrap_or_default();
    let mut servers = BTreeMap::new();
    for (name, s) in &file.servers {
        let valid = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            p.push(
                format!("mcp.servers.{name}"),
                "server names are 1–64 chars of [A-Za-z0-9_-]",
            );
        }
        let path = format!("mcp.servers.{name}.first_seen");
        if let Some(f) = first_seen(p, &path, s.first_seen.as_ref()) {
            servers.insert(name.clone(), f);
        }
    }
    super::McpPolicy {
        first_seen: default,
        servers,
    }
}

fn level(p: &mut Problems, path: &str, value: Option<&String>, default: TrustLevel) -> TrustLevel {
    match value.map(|v| v.parse::<TrustLevel>()) {
        None => default,
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            p.push(path, e);
            default
        }
    }
}

fn duration(p: &mut Problems, path: &str, value: Option<&String>, default: Duration) -> Duration {
    match value {
        None => default,
        Some(v) => match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.push(path, "must be greater than zero");
                default
            }
            Err(e) => {
                p.push(
                    path,
                    format!("{v:?} is not a duration like \"30s\", \"5m\" or \"1h\" ({e})"),
                );
                default
            }
        },
    }
}

fn compile_defaults(file: &PolicyFile, p: &mut Problems) -> Defaults {
    let d = &file.defaults;
    Defaults {
        trust_level: level(
            p,
            "defaults.trust_level",
            d.trust_level.as_ref(),
            TrustLevel::L0Observer,
        ),
        required_trust: level(
            p,
            "defaults.required_trust",
            d.required_trust.as_ref(),
            TrustLevel::L0Observer,
        ),
        consent_allow: d.consent == Some(ConsentDefault::Allow),
        reservation_ttl: duration(
            p,
            "defaults.reservation_ttl",
            d.reservation_ttl.as_ref(),
            Duration::from_secs(300),
        ),
        trust_decay_days: d.trust_decay_days.unwrap_or(0),
        request_id_retention: duration(
            p,
            "defaults.request_id_retention",
            d.request_id_retention.as_ref(),
            Duration::from_secs(24 * 3600),
        ),
        approval_ttl: duration(
            p,
            "defaults.approval_ttl",
            d.approval_ttl.as_ref(),
            Duration::from_secs(3600),
        ),
        approval_without_operator: match d.approval_without_operator.as_deref() {
            None | Some("any_operator") => true,
            Some("nobody") => false,
            Some(other) => {
                p.push(
                    "defaults.approval_without_operator",
                    format!("must be \"any_operator\" or \"nobody\", got {other:?}"),
                );
                true
            }
        },
    }
}

/// Money in policy is a quoted decimal string ("12.50"); YAML floats are refused because
/// they cannot represent every micro-USD amount exactly.
fn usd(p: &mut Problems, path: &str, value: &serde_norway::Value) -> Option<MicroUsd> {
    let text = match value {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) if n.is_u64() => n.to_string(),
        serde_norway::Value::Number(_) => {
            p.push(
                path,
                "write money as a quoted decimal string such as \"12.50\" (floats are not exact)",
            );
            return None;
        }
        _ => {
            p.push(path, "must be a decimal USD amount such as \"12.50\"");
            return None;
        }
    };
    match MicroUsd::parse_usd(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(path, e);
            None
        }
    }
}

fn compile_prices(file: &PolicyFile, p: &mut Problems) -> PriceTable {
    let mut table = PriceTable::built_in();
    for (model, price) in &file.prices {
        let input = usd(p, &format!("prices.{model}.input"), &price.input);
        let output = usd(p, &format!("prices.{model}.output"), &price.output);
        if let (Some(i), Some(o)) = (input, output) {
            table.set(
                model.clone(),
                Price {
                    input_per_mtok: i.0,
                    output_per_mtok: o.0,
                },
            );
        }
    }
    table
}

fn globs(p: &mut Problems, path: &str, patterns: &[String], separator_aware: bool) -> GlobList {
    GlobList::new(patterns, separator_aware).unwrap_or_else(|e| {
        p.push(path, e);
        GlobList::empty()
    })
}

fn compile_actions(file: &PolicyFile, p: &mut Problems) -> Vec<ActionRule> {
    let mut out = Vec::new();
    for (i, rule) in file.actions.iter().enumerate() {
        let path = format!("actions[{i}]");
        let m = &rule.matcher;
        if m.tool.is_none() && m.api.is_none() && m.model.is_none() && m.arguments.is_none() {
            p.push(
                format!("{path}.match"),
                "must name at least one of tool, api, model or arguments",
            );
        }
        let arguments = argument_matchers(p, &format!("{path}.match.arguments"), m);
        if let Some(r) = &rule.reason {
            if r.chars().count() > 256 || r.chars().any(char::is_control) {
                p.push(
                    format!("{path}.reason"),
                    "must be at most 256 characters without control characters",
                );
            }
        }
        let api = m.api.as_ref().and_then(|a| match ApiPattern::parse(a) {
            Ok(pat) => Some(pat),
            Err(e) => {
                p.push(format!("{path}.match.api"), e);
                None
            }
        });
        let approval = match rule.approval.as_deref() {
            None | Some("escalate") => ApprovalMode::Escalate,
            Some("always") => ApprovalMode::Always,
            Some("never") => ApprovalMode::Never,
            Some(other) => {
                p.push(
                    format!("{path}.approval"),
                    format!("must be always, never or escalate, got {other:?}"),
                );
                ApprovalMode::Escalate
            }
        };
        if approval == ApprovalMode::Never && (rule.irreversible || rule.external) {
            p.push(format!("{path}.approval"), "cannot be \"never\" for an irreversible or external action (a human must approve those)");
        }
        if rule
            .category
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.chars().count() > 128)
        {
            p.push(format!("{path}.category"), "must be 1–128 characters");
        }
        out.push(ActionRule {
            tool: m.tool.as_ref().map(|t| {
                globs(
                    p,
                    &format!("{path}.match.tool"),
                    std::slice::from_ref(t),
                    false,
                )
            }),
            api,
            model: m.model.as_ref().map(|t| {
                globs(
                    p,
                    &format!("{path}.match.model"),
                    std::slice::from_ref(t),
                    false,
                )
            }),
            trust: rule
                .trust
                .as_ref()
                .map(|t| level(p, &format!("{path}.trust"), Some(t), TrustLevel::L0Observer)),
            critical: rule.critical,
            approval,
            irreversible: rule.irreversible,
            external: rule.external,
            arguments,
            deny: rule.deny,
            reason: rule.reason.clone(),
            index: i,
            category: rule.category.clone(),
        });
    }
    out
}

fn argument_matchers(p: &mut Problems, path: &str, m: &MatchFile) -> Vec<ArgMatcher> {
    let Some(conditions) = &m.arguments else {
        return Vec::new();
    };
    if conditions.is_empty() {
        p.push(path, "must name at least one argument");
    }
    let mut out = Vec::new();
    for (arg, condition) in conditions {
        match ArgMatcher::compile(arg, condition) {
            Ok(matcher) => out.push(matcher),
            Err(problems) => {
                for (sub, problem) in problems {
                    let at = if sub.is_empty() {
                        format!("{path}.{arg}")
                    } else {
                        format!("{path}.{arg}.{sub}")
                    };
                    p.push(at, problem);
                }
            }
        }
    }
    out
}

fn tool_scope(p: &mut Problems, path: &str, f: &AllowDenyFile) -> ToolScope {
    ToolScope {
        allow: globs(p, &format!("{path}.allow"), &f.allow, false),
        deny: globs(p, &format!("{path}.deny"), &f.deny, false),
        hidden: globs(p, &format!("{path}.hidden"), &f.hidden, false),
    }
}

fn api_list(p: &mut Problems, path: &str, patterns: &[String]) -> Vec<ApiPattern> {
    patterns
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match ApiPattern::parse(a) {
            Ok(pat) => Some(pat),
            Err(e) => {
                p.push(format!("{path}[{i}]"), e);
                None
            }
        })
        .collect()
}

fn compile_agents(file: &PolicyFile, p: &mut Problems) -> Vec<AgentRule> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, rule) in file.agents.iter().enumerate() {
        let path = format!("agents[{i}]");
        if rule.id.is_empty() {
            p.push(format!("{path}.id"), "must not be empty");
        }
        if !seen.insert(rule.id.clone()) {
            p.push(
                format!("{path}.id"),
                format!("{:?} is listed twice", rule.id),
            );
        }
        if !rule.apis.hidden.is_empty() {
            p.push(
                format!("{path}.apis.hidden"),
                "hidden applies to tools only",
            );
        }
        let loop_guard = rule.loop_guard.as_ref().map(|g| {
            if g.max_calls == 0 {
                p.push(format!("{path}.loop_guard.max_calls"), "must be at least 1");
            }
            LoopGuard {
                max_calls: g.max_calls,
                window: duration(
                    p,
                    &format!("{path}.loop_guard.window"),
                    Some(&g.window),
                    Duration::from_secs(60),
                ),
            }
        });
        out.push(AgentRule {
            id_pattern: rule.id.clone(),
            id: globs(
                p,
                &format!("{path}.id"),
                std::slice::from_ref(&rule.id),
                false,
            ),
            tools: tool_scope(p, &format!("{path}.tools"), &rule.tools),
            apis: ApiScope {
                allow: api_list(p, &format!("{path}.apis.allow"), &rule.apis.allow),
                deny: api_list(p, &format!("{path}.apis.deny"), &rule.apis.deny),
            },
            models: globs(p, &format!("{path}.models"), &rule.models, false),
            loop_guard,
            critical: rule.critical,
        });
    }
    out
}

fn compile_budgets(file: &PolicyFile, p: &mut Problems) -> Vec<Budget> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in file.budgets.iter().enumerate() {
        let path = format!("budgets[{i}]");
        if b.name.is_empty() || b.name.len() > 128 {
            p.push(format!("{path}.name"), "must be 1–128 characters");
        }
        if !seen.insert(b.name.clone()) {
            p.push(
                format!("{path}.name"),
                format!("{:?} is defined twice", b.name),
            );
        }
        let scope = match b.scope.as_str() {
            "agent" => BudgetScope::Agent,
            "session" => BudgetScope::Session,
            "category" => BudgetScope::Category,
            "global" => BudgetScope::Global,
            other => {
                p.push(
                    format!("{path}.scope"),
                    format!("must be agent, session, category or global, got {other:?}"),
                );
                BudgetScope::Global
            }
        };
        if scope == BudgetScope::Category && b.category.is_none() {
            p.push(
                format!("{path}.category"),
                "is required when scope is category",
            );
        }
        if scope != BudgetScope::Category && b.category.is_some() {
            p.push(
                format!("{path}.category"),
                "only applies when scope is category",
            );
        }
        let period = b.period.parse::<Period>().unwrap_or_else(|e| {
            p.push(format!("{path}.period"), e);
            Period::Lifetime
        });
        let caps = Caps {
            micro_usd: b
                .max_usd
                .as_ref()
                .and_then(|v| usd(p, &format!("{path}.max_usd"), v)),
            tokens: b.max_tokens,
            calls: b.max_calls,
            session_seconds: b.max_session_seconds,
        };
        if caps.micro_usd.is_none()
            && caps.tokens.is_none()
            && caps.calls.is_none()
            && caps.session_seconds.is_none()
            && b.max_usd.is_none()
        {
            p.push(
                &path,
                "must set at least one of max_usd, max_tokens, max_calls or max_session_seconds",
            );
        }
        if caps.session_seconds.is_some() && scope != BudgetScope::Session {
            p.push(
                format!("{path}.max_session_seconds"),
                "only applies when scope is session",
            );
        }
        let agents = if b.agents.is_empty() {
            vec!["*".to_owned()]
        } else {
            b.agents.clone()
        };
        out.push(Budget {
            name: b.name.clone(),
            scope,
            agents: globs(p, &format!("{path}.agents"), &agents, false),
            category: b.category.clone(),
            period,
            caps,
            fail_open: b.fail_open,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_bundle_compiles_and_hashes_its_bytes() {
        let yaml = br#"
version: 1
defaults: {trust_level: L1, consent: allow, reservation_ttl: 2m}
prices: {my-model: {input: "1.00", output: "2"}}
actions:
  - match: {tool: "send_*"}
    trust: L3_ACT_APPROVE
agents:
  - id: "billing-*"
    tools: {allow: ["read_*"], deny: ["read_secrets"], hidden: ["admin_*"]}
    apis: {allow: ["GET https://api.example.com/**"]}
    models: ["gpt-4o*"]
    loop_guard: {max_calls: 3, window: 60s}
budgets:
  - {name: daily, scope: agent, period: day, max_usd: "10.00", max_calls: 100}
"#;
        let p = compile(yaml, "policy.yaml").unwrap();
        assert!(p.version.starts_with("sha256:"));
        assert_eq!(p.defaults.trust_level, TrustLevel::L1Monitor);
        assert_eq!(p.budgets[0].caps.micro_usd, Some(MicroUsd(10_000_000)));
        assert_eq!(p.prices.get("my-model").unwrap().output_per_mtok, 2_000_000);
        assert!(p.agent_rule("billing-eu").is_some());
        assert!(p.agent_rule("other").is_none());
    }

    #[test]
    fn every_problem_is_reported_with_file_and_path() {
        let yaml = br#"
version: 1
defaults: {trust_level: L9}
budgets:
  - {name: b, scope: team, period: fortnight, max_usd: 10.5}
"#;
        let err = compile(yaml, "bad.yaml").unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
        assert!(err.contains("defaults.trust_level"), "{err}");
        assert!(err.contains("budgets[0].scope"), "{err}");
        assert!(err.contains("budgets[0].period"), "{err}");
        assert!(
            err.contains("budgets[0].max_usd: write money as a quoted decimal"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_location() {
        let err = compile(b"version: 1\nagents:\n  - id: a\n    toolz: {}\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("toolz"), "{err}");
        assert!(err.contains("agents[0]"), "{err}");
    }
}

#[cfg(test)]
mod example {
    /// The bundle shown in docs/policy.md must stay valid.
    #[test]
    fn the_documented_example_bundle_compiles() {
        let bytes = include_bytes!("../../../examples/policy.yaml");
        super::compile(bytes, "examples/policy.yaml").unwrap();
    }
}
