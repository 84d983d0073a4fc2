//! MCP tool pins (tool-poisoning and rug-pull defence, docs/mcp.md): per upstream
//! server and tool, the digest of the definition that is trusted and at most one other
//! definition waiting for an operator (or rejected by one). A gateway shows and
//! forwards a tool only while the definition it reads has the trusted digest.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happens to a reported definition that is not the trusted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CandidateState {
    Pending,
    Rejected,
}

impl CandidateState {
    /// The name stored in `mcp_tool_pins.candidate_state`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A definition and its digest (`sha256:` of its RFC 8785 form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedDefinition {
    pub digest: String,
    /// The RFC 8785 JSON text the digest is over.
    pub definition: String,
    /// The operator's principal, or `first-use:<agent>` for a definition trusted on first use;
    /// for a candidate, the agent whose gateway reported it.
    pub by: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    pub server: String,
    pub tool: String,
    pub trusted: Option<PinnedDefinition>,
    pub candidate: Option<(PinnedDefinition, CandidateState)>,
}

/// The verdict on one reported definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    Pending,
    Rejected,
}

impl ToolPin {
    /// What a gateway reading this digest is told.
    pub fn verdict(&self, digest: &str) -> Option<Verdict> {
        if self.trusted.as_ref().is_some_and(|t| t.digest == digest) {
            return Some(Verdict::Trusted);
        }
        match &self.candidate {
            Some((c, CandidateState::Pending)) if c.digest == digest => Some(Verdict::Pending),
            Some((c, CandidateState::Rejected)) if c.digest == digest => Some(Verdict::Rejected),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct PinBook {
    pins: BTreeMap<(String, String), ToolPin>,
}

impl PinBook {
    pub fn get(&self, server: &str, tool: &str) -> Option<&ToolPin> {
        self.pins.get(&(server.to_owned(), tool.to_owned()))
    }

    pub fn put(&mut self, pin: ToolPin) {
        self.pins
            .insert((pin.server.clone(), pin.tool.clone()), pin);
    }

    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Pins ordered by server and tool.
    pub fn list(&self, server: Option<&str>, pending_only: bool) -> Vec<ToolPin> {
        self.pins
            .values()
            .filter(|p| server.is_none_or(|s| p.server == s))
            .filter(|p| !pending_only || matches!(p.candidate, Some((_, CandidateState::Pending))))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(digest: &str) -> PinnedDefinition {
        PinnedDefinition {
            digest: digest.into(),
            definition: "{}".into(),
            by: "x".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn only_the_trusted_digest_is_trusted() {
        let pin = ToolPin {
            server: "s".into(),
            tool: "t".into(),
            trusted: Some(def("a")),
            candidate: Some((def("b"), CandidateState::Pending)),
        };
        assert_eq!(pin.verdict("a"), Some(Verdict::Trusted));
        assert_eq!(pin.verdict("b"), Some(Verdict::Pending));
        assert_eq!(pin.verdict("c"), None);
        let rejected = ToolPin {
            candidate: Some((def("b"), CandidateState::Rejected)),
            ..pin
        };
        assert_eq!(rejected.verdict("b"), Some(Verdict::Rejected));
    }
}
