//! MCP tool pinning: what a gateway reports it read from an upstream server, checked
//! against the pin book; first-seen and changed definitions, and an operator's approval
//! or rejection, each commit one audit entry with the pin (docs/mcp.md, trust model).
//!
//! Who may do what: a report (any principal acting for the agent, i.e. a gateway with
//! the agent's key) can only pin a definition never seen for that tool, and only where
//! the policy's `mcp` section trusts first use for that server; everything else it
//! reports is held for an operator. Only `approve` (operators) trusts a held definition.

use super::{Engine, EngineError, Principal};
use crate::audit::refusal::Refusal;
use crate::audit::EntryDraft;
use crate::domain::AgentId;
use crate::policy::FirstSeen;
use crate::state::{CandidateState, PinnedDefinition, ToolPin, Verdict};
use crate::store::StateOp;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Bound on the pin book: reports of more tools than this are refused, so agent keys
/// cannot grow the table without limit.
pub const MAX_PINS: usize = 10_000;

/// One definition as a gateway reported it (already checked to be a JSON object).
pub struct ReportedTool {
    pub name: String,
    pub definition: serde_json::Value,
}

/// The answer for one reported tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAnswer {
    pub name: String,
    pub digest: String,
    pub verdict: Verdict,
    /// The trusted digest when it is not this one.
    pub trusted_digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinDecision {
    Approve,
    Reject,
}

/// A definition's RFC 8785 text and its digest.
fn canonical(definition: &serde_json::Value) -> Result<(String, String), EngineError> {
    let text = serde_jcs::to_string(definition)
        .map_err(|e| crate::domain::ParseError::new("tools.definition_json", e.to_string()))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
    Ok((text, digest))
}

/// Whether a definition's annotations declare the tool read-only: `readOnlyHint` is
/// `true` and `destructiveHint` is not `true` (MCP's default for a missing
/// `destructiveHint` is destructive, but the spec reads it only for tools that are not
/// read-only; a definition that claims both is contradictory and gets no trust).
/// Anything else (no annotations, other types, a malformed definition) is not.
fn declared_read_only(canonical: &str) -> bool {
    let Ok(definition) = serde_json::from_str::<serde_json::Value>(canonical) else {
        return false;
    };
    let hint = |key: &str| definition.pointer(&format!("/annotations/{key}"));
    hint("readOnlyHint") == Some(&serde_json::Value::Bool(true))
        && hint("destructiveHint") != Some(&serde_json::Value::Bool(true))
}

fn answer(pin: &ToolPin, name: &str, digest: &str, verdict: Verdict) -> ToolAnswer {
    ToolAnswer {
        name: name.to_owned(),
        digest: digest.to_owned(),
        verdict,
        trusted_digest: pin
            .trusted
            .as_ref()
            .map(|t| t.digest.clone())
            .filter(|t| t != digest),
    }
}

impl Engine {
    /// Verdicts for the reported definitions, pinning or holding the unknown ones.
    pub async fn report_tools(
        &self,
        agent: &AgentId,
        server: &str,
        tools: Vec<ReportedTool>,
    ) -> Result<Vec<ToolAnswer>, EngineError> {
        let mut hashed = Vec::with_capacity(tools.len());
        for t in tools {
            let (text, digest) = canonical(&t.definition)?;
            hashed.push((t.name, text, digest));
        }
        if let Some(known) = self.known_verdicts(server, &hashed) {
            return Ok(known);
        }
        // Something is new: decide under the lock, so two reports of the same new
        // definition pin it once (on this server; across replicas the commit checks
        // the stored pin, and a lost race is decided again on the newer copy).
        let _serial = self.pin_changes.lock().await;
        let mut attempt = 0;
        loop {
            match self.decide_reported(agent, server, &hashed).await {
                Err(EngineError::Lost(Refusal::ToolPinChanged { .. }))
                    if self.catch_up_after_lost_race(&mut attempt).await => {}
                answer => return answer,
            }
        }
    }

    /// Verdicts for a report with something new in it, under `pin_changes`.
    async fn decide_reported(
        &self,
        agent: &AgentId,
        server: &str,
        hashed: &[(String, String, String)],
    ) -> Result<Vec<ToolAnswer>, EngineError> {
        let mut out = Vec::with_capacity(hashed.len());
        for (name, text, digest) in hashed {
            let current = self.lock().tool_pins.get(server, name).cloned();
            if let Some(pin) = &current {
                if let Some(v) = pin.verdict(digest) {
                    out.push(answer(pin, name, digest, v));
                    continue;
                }
            } else if self.lock().tool_pins.len() >= MAX_PINS {
                return Err(EngineError::FailedPrecondition(format!(
                    "the tool pin book is full ({MAX_PINS} tools); no new tool can be pinned"
                )));
            }
            let pin = self
                .note_definition(agent, server, name, text.clone(), digest, current)
                .await?;
            let verdict = pin.verdict(digest).unwrap_or(Verdict::Pending);
            out.push(answer(&pin, name, digest, verdict));
        }
        Ok(out)
    }

    /// All verdicts when every reported definition is already known (the common case:
    /// nothing to write, no lock to wait for).
    fn known_verdicts(
        &self,
        server: &str,
        hashed: &[(String, String, String)],
    ) -> Option<Vec<ToolAnswer>> {
        let s = self.lock();
        hashed
            .iter()
            .map(|(name, _, digest)| {
                let pin = s.tool_pins.get(server, name)?;
                pin.verdict(digest).map(|v| answer(pin, name, digest, v))
            })
            .collect()
    }

    /// Records a definition not known for this tool: pinned (first seen where policy
    /// trusts first use) or held for an operator (first seen elsewhere, or changed).
    async fn note_definition(
        &self,
        agent: &AgentId,
        server: &str,
        tool: &str,
        text: String,
        digest: &str,
        current: Option<ToolPin>,
    ) -> Result<ToolPin, EngineError> {
        let now = self.now_ms();
        let first_use = current.is_none()
            && match self.policy().mcp.first_seen(server) {
                FirstSeen::Trust => true,
                FirstSeen::Approve => false,
                FirstSeen::TrustReadOnly => declared_read_only(&text),
            };
        let seen = PinnedDefinition {
            digest: digest.to_owned(),
            definition: text,
            by: if first_use {
                format!("first-use:{agent}")
            } else {
                agent.to_string()
            },
            at_ms: now,
        };
        let (kind, pin) = match current.clone() {
            None if first_use => (
                "mcp.tool.pin",
                ToolPin {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                    trusted: Some(seen.clone()),
                    candidate: None,
                },
            ),
            None => (
                "mcp.tool.first_seen",
                ToolPin {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                    trusted: None,
                    candidate: Some((seen.clone(), CandidateState::Pending)),
                },
            ),
            Some(pin) => (
                "mcp.tool.changed",
                ToolPin {
                    candidate: Some((seen.clone(), CandidateState::Pending)),
                    ..pin
                },
            ),
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: kind.into(),
            agent_id: agent.to_string(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({
                "server": server,
                "tool": tool,
                "digest": digest,
                "definition": seen.definition,
                "trusted_digest": pin.trusted.as_ref().map(|t| t.digest.clone()),
            })
            .into(),
        };
        self.commit_pin(draft, current, pin.clone()).await?;
        Ok(pin)
    }

    /// An operator's approval or rejection of the definition with `digest` that waits
    /// (or, for an approval, was rejected before) for `tool` of `server`.
    pub async fn decide_tool_pin(
        &self,
        who: &Principal,
        server: &str,
        tool: &str,
        digest: &str,
        decision: PinDecision,
        reason: String,
    ) -> Result<(ToolPin, u64), EngineError> {
        let _serial = self.pin_changes.lock().await;
        let pin = self
            .lock()
            .tool_pins
            .get(server, tool)
            .cloned()
            .ok_or_else(|| {
                EngineError::NotFound(format!("no tool {tool:?} of server {server:?} is known"))
            })?;
        let Some((candidate, state)) = pin.candidate.clone() else {
            return Err(EngineError::FailedPrecondition(format!(
                "no definition of {server}/{tool} waits for a decision"
            )));
        };
        if candidate.digest != digest {
            return Err(EngineError::FailedPrecondition(format!(
                "the definition of {server}/{tool} that waits is {}, not {digest}; list the pins again",
                candidate.digest
            )));
        }
        let now = self.now_ms();
        let (kind, next) = match (decision, state) {
            (PinDecision::Reject, CandidateState::Rejected) => {
                return Err(EngineError::FailedPrecondition(format!(
                    "{digest} of {server}/{tool} is already rejected"
                )))
            }
            (PinDecision::Reject, CandidateState::Pending) => (
                "mcp.tool.reject",
                ToolPin {
                    candidate: Some((candidate, CandidateState::Rejected)),
                    ..pin.clone()
                },
            ),
            (PinDecision::Approve, _) => (
                "mcp.tool.approve",
                ToolPin {
                    trusted: Some(PinnedDefinition {
                        by: who.name.clone(),
                        at_ms: now,
                        ..candidate
                    }),
                    candidate: None,
                    ..pin.clone()
                },
            ),
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: kind.into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({
                "server": server,
                "tool": tool,
                "digest": digest,
                "previous_digest": pin.trusted.as_ref().map(|t| t.digest.clone()),
                "principal": who.name,
                "reason": reason,
            })
            .into(),
        };
        let seq = match self.commit_pin(draft, Some(pin), next.clone()).await {
            Err(e @ EngineError::Lost(Refusal::ToolPinChanged { .. })) => {
                // Another replica changed the pin: catch up, so the operator's next
                // listing and attempt see what is stored (nothing was written).
                self.catch_up_after_lost_race(&mut 0).await;
                return Err(e);
            }
            other => other?,
        };
        Ok((next, seq))
    }

    /// Commits a pin decided against `current` (this server's copy), then adopts it.
    /// On a shared store the commit is refused (`Refusal::ToolPinChanged`) when the
    /// stored pin is no longer `current`: a replica whose copy is behind must neither
    /// pin over another replica's first use nor undo an operator's decision.
    async fn commit_pin(
        &self,
        draft: EntryDraft,
        current: Option<ToolPin>,
        next: ToolPin,
    ) -> Result<u64, EngineError> {
        let mut ops = Vec::with_capacity(2);
        if self.store.replicated().is_some() {
            ops.push(StateOp::ExpectToolPin {
                server: next.server.clone(),
                tool: next.tool.clone(),
                current,
            });
        }
        ops.push(StateOp::PutToolPin(next.clone()));
        let seq = self.append(draft, ops).await?;
        self.lock().tool_pins.put(next);
        Ok(seq)
    }

    pub fn list_tool_pins(&self, server: Option<&str>, pending_only: bool) -> Vec<ToolPin> {
        self.lock().tool_pins.list(server, pending_only)
    }
}

#[cfg(test)]
mod read_only_tests {
    use super::declared_read_only;

    #[test]
    fn only_a_read_only_hint_without_a_destructive_one_is_read_only() {
        for (definition, read_only) in [
            (r#"{"annotations":{"readOnlyHint":true}}"#, true),
            (
                r#"{"annotations":{"readOnlyHint":true,"destructiveHint":false}}"#,
                true,
            ),
            (
                r#"{"annotations":{"readOnlyHint":true,"destructiveHint":true}}"#,
                false,
            ),
            (r#"{"annotations":{"readOnlyHint":false}}"#, false),
            (r#"{"annotations":{"readOnlyHint":"true"}}"#, false),
            (r#"{"annotations":{}}"#, false),
            (r#"{"name":"x"}"#, false),
            ("not json", false),
        ] {
            assert_eq!(declared_read_only(definition), read_only, "{definition}");
        }
    }
}
