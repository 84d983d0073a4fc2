//! Issuing delegation tokens. A refusal is audited (`delegation.refused`) with its
//! code, like any other authorization failure; an issued token is audited
//! (`delegation.issued`) with everything it grants, but never the token itself.

use super::{new_id, Engine, EngineError};
use crate::audit::EntryDraft;
use crate::delegation::{api_covered, tool_covered, Grant};
use crate::domain::{AgentId, Principal};
use serde_json::json;

/// A validated Delegate request.
#[derive(Debug, Clone)]
pub struct DelegateInput {
    pub parent: AgentId,
    pub subject: AgentId,
    pub tools: Vec<String>,
    pub apis: Vec<String>,
    pub ttl_ms: i64,
    pub max_depth: u32,
    pub parent_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Delegated {
    pub token: String,
    pub grant: Grant,
    pub audit_seq: u64,
}

/// A refusal before it is audited.
struct Refusal(&'static str, String);

impl Engine {
    pub async fn delegate(
        &self,
        who: &Principal,
        input: DelegateInput,
    ) -> Result<Delegated, EngineError> {
        let now = self.now_ms();
        let grant = match self.plan_grant(&input, now) {
            Ok(g) => g,
            Err(Refusal(code, message)) => {
                let draft = EntryDraft {
                    ts_ms: now,
                    kind: "delegation.refused".into(),
                    agent_id: input.parent.to_string(),
                    session_id: String::new(),
                    outcome: "deny".into(),
                    body: json!({
                        "code": code,
                        "message": message,
                        "subject": input.subject.as_str(),
                        "tools": input.tools,
                        "apis": input.apis,
                        "principal": who.name,
                    })
                    .into(),
                };
                self.append(draft, Vec::new()).await?;
                return Err(EngineError::Refused { code, message });
            }
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: "delegation.issued".into(),
            agent_id: input.parent.to_string(),
            session_id: String::new(),
            outcome: "allow".into(),
            body: json!({
                "token_id": grant.id,
                "subject": grant.sub,
                "issuers": grant.issuers,
                "tools": grant.tools,
                "apis": grant.apis,
                "expires_ts_ms": grant.exp_ms,
                "depth": grant.depth,
                "parent_token_id": grant.parent,
                "key_id": grant.kid,
                "principal": who.name,
            })
            .into(),
        };
        let audit_seq = self.append(draft, Vec::new()).await?;
        Ok(Delegated {
            token: self.tokens.sign(&grant),
            grant,
            audit_seq,
        })
    }

    /// Checks that the request only narrows what the parent holds and builds the grant.
    fn plan_grant(&self, input: &DelegateInput, now: i64) -> Result<Grant, Refusal> {
        let parent = input.parent.as_str();
        let halted = self.lock().halts.applicable(parent, None).next().map(|h| {
            format!(
                "{} halt on {} engaged by {}: a halted agent cannot delegate",
                h.mode.name(),
                h.target.describe(),
                h.engaged_by
            )
        });
        if let Some(message) = halted {
            return Err(Refusal("halt.engaged", message));
        }
        let escalation = |what: &str, from: &str| {
            Refusal(
                "delegation.escalation",
                format!("{what} is not within {from}; a delegation can only narrow"),
            )
        };
        let mut exp_ms = now.saturating_add(input.ttl_ms);
        let (issuers, depth_left, parent_id) = match &input.parent_token {
            Some(text) => {
                let t = self
                    .tokens
                    .verify(text)
                    .map_err(|f| Refusal("delegation.forged", format!("parent_token: {}", f.0)))?;
                let g = t.grant;
                if g.exp_ms <= now {
                    return Err(Refusal(
                        "delegation.expired",
                        format!("parent_token {} has expired", g.id),
                    ));
                }
                if g.sub != parent {
                    return Err(Refusal(
                        "delegation.wrong_subject",
                        format!(
                            "parent_token {} was issued to {}, not to {parent}",
                            g.id, g.sub
                        ),
                    ));
                }
                let from = format!("parent_token {}", g.id);
                for tool in &input.tools {
                    tool_covered(&g.tools, tool)
                        .ok_or_else(|| escalation(&format!("tool pattern {tool:?}"), &from))?;
                }
                for api in &input.apis {
                    api_covered(&g.apis, api)
                        .ok_or_else(|| escalation(&format!("API pattern {api:?}"), &from))?;
                }
                // A narrower token never outlives the one it came from.
                exp_ms = exp_ms.min(g.exp_ms);
                let mut issuers = g.issuers;
                issuers.push(g.sub);
                (issuers, g.depth, Some(g.id))
            }
            None => {
                let policy = self.policy();
                let rule = policy.agent_rule(parent).ok_or_else(|| {
                    Refusal(
                        "delegation.escalation",
                        format!("agent {parent} has no policy, so it has nothing to delegate"),
                    )
                })?;
                let from = format!("agent {parent}'s policy");
                for tool in &input.tools {
                    let denied = rule.tools.deny.is_match(tool) || rule.tools.hidden.is_match(tool);
                    if denied || tool_covered(rule.tools.allow.patterns(), tool).is_none() {
                        return Err(escalation(&format!("tool pattern {tool:?}"), &from));
                    }
                }
                let allowed: Vec<String> = rule.apis.allow.iter().map(|p| p.text.clone()).collect();
                for api in &input.apis {
                    api_covered(&allowed, api)
                        .ok_or_else(|| escalation(&format!("API pattern {api:?}"), &from))?;
                }
                // A root token may be delegated as often as the request asks (≤ 8).
                (vec![parent.to_owned()], input.max_depth + 1, None)
            }
        };
        if depth_left == 0 || input.max_depth > depth_left - 1 {
            return Err(Refusal(
                "delegation.depth_exceeded",
                format!(
                    "max_depth {} exceeds the {} further delegation(s) the parent token allows",
                    input.max_depth,
                    depth_left.saturating_sub(1)
                ),
            ));
        }
        Ok(Grant {
            v: 1,
            id: new_id("dt"),
            origin: self.tokens.origin().to_owned(),
            kid: self.tokens.active_kid(),
            issuers,
            sub: input.subject.to_string(),
            tools: input.tools.clone(),
            apis: input.apis.clone(),
            iat_ms: now,
            exp_ms,
            depth: input.max_depth,
            parent: parent_id,
        })
    }
}
