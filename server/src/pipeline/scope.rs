//! Stage 5: scope (default deny) and the loop guard. Owns `scope.no_policy`,
//! `scope.tool_denied`, `scope.tool_hidden`, `scope.tool_not_allowed`,
//! `scope.api_denied`, `scope.api_not_allowed`, `scope.model_not_allowed`,
//! `scope.action_denied`, `scope.arguments_unreadable` and `loop.detected`, and the delegation codes `delegation.forged`, `delegation.expired`,
//! `delegation.wrong_subject`, `delegation.out_of_scope` and `delegation.issuer_scope`.

use super::{Reason, Request, Snapshot};
use crate::delegation::TokenCheck;
use crate::policy::AgentRule;
use crate::state::LoopKey;

/// Whether a tool is visible to (and callable by) the agent rule.
pub fn tool_visible(rule: &AgentRule, tool: &str) -> bool {
    !rule.tools.deny.is_match(tool)
        && !rule.tools.hidden.is_match(tool)
        && rule.tools.allow.is_match(tool)
}

fn check_targets(req: &Request<'_>, rule: &AgentRule) -> Result<String, Reason> {
    let mut ok = Vec::new();
    if let Some(tool) = req.action.tool.as_deref() {
        if let Some(p) = rule.tools.deny.first_match(tool) {
            return Err(Reason::fail(
                "scope",
                "scope.tool_denied",
                format!("tool {tool:?} is denied by pattern {p:?}"),
            ));
        }
        if rule.tools.hidden.is_match(tool) {
            return Err(Reason::fail(
                "scope",
                "scope.tool_hidden",
                format!("tool {tool:?} is hidden from agent {}", req.agent_id),
            ));
        }
        match rule.tools.allow.first_match(tool) {
            Some(p) => ok.push(format!("tool {tool:?} allowed by {p:?}")),
            None => {
                return Err(Reason::fail(
                    "scope",
                    "scope.tool_not_allowed",
                    format!(
                        "tool {tool:?} is not in agent {}'s allow list",
                        req.agent_id
                    ),
                ))
            }
        }
    }
    if let Some(api) = &req.action.api {
        if let Some(p) = rule
            .apis
            .deny
            .iter()
            .find(|p| p.matches(&api.method, &api.url))
        {
            return Err(Reason::fail(
                "scope",
                "scope.api_denied",
                format!(
                    "{} {} is denied by pattern {:?}",
                    api.method, api.url, p.text
                ),
            ));
        }
        match rule
            .apis
            .allow
            .iter()
            .find(|p| p.matches(&api.method, &api.url))
        {
            Some(p) => ok.push(format!(
                "{} {} allowed by {:?}",
                api.method, api.url, p.text
            )),
            None => {
                return Err(Reason::fail(
                    "scope",
                    "scope.api_not_allowed",
                    format!(
                        "{} {} is not in agent {}'s API allow list",
                        api.method, api.url, req.agent_id
                    ),
                ))
            }
        }
    }
    if let Some(model) = req.action.model.as_deref() {
        match rule.models.first_match(model) {
            Some(p) => ok.push(format!("model {model:?} allowed by {p:?}")),
            None => {
                return Err(Reason::fail(
                    "scope",
                    "scope.model_not_allowed",
                    format!("model {model:?} is not allowed for agent {}", req.agent_id),
                ))
            }
        }
    }
    Ok(ok.join("; "))
}

/// Action rules that deny, and argument conditions the request's arguments cannot
/// answer: both deny, because an unreadable condition may be the one that asks for a
/// human or marks the call as denied.
fn check_action_rules(req: &Request<'_>, snap: &Snapshot<'_>) -> Result<(), Reason> {
    for rule in &snap.policy.actions {
        if let Some(fault) = rule.argument_fault(req.action) {
            return Err(Reason::fail(
                "scope",
                "scope.arguments_unreadable",
                format!(
                    "actions[{}] cannot be applied: {}; the action is denied",
                    rule.index, fault.0
                ),
            ));
        }
    }
    match snap
        .policy
        .actions
        .iter()
        .find(|r| r.deny && r.matches(req.action))
    {
        Some(rule) => Err(Reason::fail(
            "scope",
            "scope.action_denied",
            match &rule.reason {
                Some(why) => format!("denied by actions[{}]: {why}", rule.index),
                None => format!("denied by actions[{}]", rule.index),
            },
        )),
        None => Ok(()),
    }
}

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> (Reason, Option<(LoopKey, i64)>) {
    let Some(rule) = snap.policy.agent_rule(req.agent_id) else {
        return (
            Reason::fail(
                "scope",
                "scope.no_policy",
                format!(
                    "no agent rule in policy {} matches agent {}",
                    short(&snap.policy.version),
                    req.agent_id
                ),
            ),
            None,
        );
    };
    let mut allowed = match check_targets(req, rule).and_then(|t| {
        check_action_rules(req, snap)?;
        Ok(t)
    }) {
        Ok(text) => text,
        Err(reason) => return (reason, None),
    };
    if let Some(token) = req.delegation {
        match check_token(req, snap, token) {
            Ok(text) => allowed = format!("{allowed}; {text}"),
            Err(reason) => return (reason, None),
        }
    }
    let mut loop_call = None;
    if let (Some(guard), Some(tool)) = (rule.loop_guard, req.action.tool.as_deref()) {
        let key: LoopKey = (
            req.agent_id.to_owned(),
            req.session_id.unwrap_or("").to_owned(),
            tool.to_owned(),
        );
        let window_ms = guard.window.as_millis() as i64;
        let count = snap.state.loops.count(&key, snap.now_ms, window_ms);
        if count + 1 > guard.max_calls as usize {
            return (
                Reason::fail(
                    "scope",
                    "loop.detected",
                    format!("tool {tool:?} called {count} times in the last {:?} in this session; the limit is {}", guard.window, guard.max_calls),
                ),
                None,
            );
        }
        loop_call = Some((key, window_ms));
    }
    (
        Reason::pass(
            "scope",
            "ok",
            format!("rule {:?}: {allowed}", rule.id_pattern),
        ),
        loop_call,
    )
}

/// Policy ∩ token ∩ every issuer's policy: the subject's own rule passed already; the
/// token must cover the target, and so must each issuer's *current* rule, so that
/// narrowing an issuer's policy narrows everything it delegated.
fn check_token(
    req: &Request<'_>,
    snap: &Snapshot<'_>,
    token: &TokenCheck,
) -> Result<String, Reason> {
    let fail = |code: &str, message: String| Reason::fail("scope", code, message);
    let t = match token {
        TokenCheck::Valid(t) => t,
        TokenCheck::Forged(f) => {
            return Err(fail(
                "delegation.forged",
                format!("delegation token refused: {}", f.0),
            ))
        }
    };
    let g = &t.grant;
    if g.exp_ms <= snap.now_ms {
        let when = chrono::DateTime::from_timestamp_millis(g.exp_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        return Err(fail(
            "delegation.expired",
            format!("delegation token {} expired at {when}", g.id),
        ));
    }
    if g.sub != req.agent_id {
        return Err(fail(
            "delegation.wrong_subject",
            format!(
                "delegation token {} was issued to agent {}, not {}",
                g.id, g.sub, req.agent_id
            ),
        ));
    }
    let mut covered = Vec::new();
    if let Some(tool) = req.action.tool.as_deref() {
        if !t.tools.is_match(tool) {
            return Err(fail(
                "delegation.out_of_scope",
                format!("tool {tool:?} is outside delegation token {}", g.id),
            ));
        }
        covered.push(format!("tool {tool:?}"));
    }
    if let Some(api) = &req.action.api {
        if !t.apis.iter().any(|p| p.matches(&api.method, &api.url)) {
            return Err(fail(
                "delegation.out_of_scope",
                format!(
                    "{} {} is outside delegation token {}",
                    api.method, api.url, g.id
                ),
            ));
        }
        covered.push(format!("{} {}", api.method, api.url));
    }
    for issuer in &g.issuers {
        let rule = snap.policy.agent_rule(issuer);
        let tool_ok = req
            .action
            .tool
            .as_deref()
            .is_none_or(|tool| rule.is_some_and(|r| tool_visible(r, tool)));
        let api_ok = req.action.api.as_ref().is_none_or(|api| {
            rule.is_some_and(|r| {
                !r.apis.deny.iter().any(|p| p.matches(&api.method, &api.url))
                    && r.apis
                        .allow
                        .iter()
                        .any(|p| p.matches(&api.method, &api.url))
            })
        });
        if !(tool_ok && api_ok) {
            return Err(fail(
                "delegation.issuer_scope",
                format!(
                    "issuer {issuer} of delegation token {} may no longer do this itself",
                    g.id
                ),
            ));
        }
    }
    Ok(format!(
        "{} within delegation token {} from {}",
        covered.join(", "),
        g.id,
        g.issuers.join(" → ")
    ))
}

fn short(version: &str) -> &str {
    &version[..version.len().min(19)]
}
