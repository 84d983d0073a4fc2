//! The `requestState` of a 2026-07-28 `input_required` answer to a call held for a human.
//!
//! The client echoes the state back on its retry, so the gateway treats it as attacker
//! controlled (the revision's MRTR page says so): it is sealed with HMAC-SHA256 under the
//! gateway's secret (rmcp's `RequestStateCodec`, which also stamps an authenticated
//! expiry) and names the approval, the exposed tool, the RFC 8785 digest of the
//! arguments and the agent. A retry's state is opened and every binding compared with the
//! retry itself before Arbiter is asked anything; Arbiter then checks the approval again
//! (agent, action digest, single use), so a forged or replayed state unlocks nothing.

use crate::config::RequestStateConfig;
use rand::RngCore;
use rmcp::model::{RequestStateCodec, RequestStateError, SealOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Mixed into every tag, so a state sealed for another purpose under the same secret
/// (or by another program sharing it) never opens here.
const CONTEXT: &[u8] = b"arbiter-mcp-gateway/approval-state/v1";
/// Bytes of a secret generated at start when none is configured.
const GENERATED_LEN: usize = 32;

/// What a sealed state says; readable (base64url) by anyone, so it holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApprovalState {
    pub approval_id: String,
    pub agent: String,
    pub tool: String,
    pub arguments: String,
}

/// Why a retry's state was refused; the text is what the client is told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refused {
    #[error(
        "requestState failed verification (forged, altered, or sealed by another gateway secret)"
    )]
    Forged,
    #[error(
        "requestState has expired; repeat the call without requestState to ask for a new approval"
    )]
    Expired,
    #[error("requestState was issued to another agent")]
    OtherAgent,
    #[error("requestState was issued for tool {0:?}, not this one")]
    OtherTool(String),
    #[error("requestState was issued for other arguments; an approval covers only the exact arguments it was asked for")]
    OtherArguments,
}

#[derive(Clone)]
pub(crate) struct Sealer {
    codec: RequestStateCodec,
    ttl: Duration,
}

impl Sealer {
    /// The configured secret, or a random one (then states do not survive a restart and
    /// are not shared between replicas; the start-up log says so).
    pub fn new(config: &RequestStateConfig) -> anyhow::Result<Self> {
        let secret = match config.secret()? {
            Some(s) => s,
            None => {
                tracing::warn!(
                    "request_state: no secret configured; a random one is used, so a pending call's \
                     requestState is refused after a restart and by other gateway replicas"
                );
                let mut bytes = vec![0u8; GENERATED_LEN];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                bytes
            }
        };
        let codec = RequestStateCodec::try_new(secret)
            .map_err(|e| anyhow::anyhow!("request_state secret: {e}"))?;
        Ok(Self {
            codec,
            ttl: config.ttl,
        })
    }

    pub fn seal(&self, state: &ApprovalState) -> String {
        let options = SealOptions::new().associated_data(CONTEXT).ttl(self.ttl);
        self.codec
            .seal_json_with(state, &options)
            .expect("a struct of strings always serializes")
    }

    /// Opens a retry's state and checks it against the retry (agent, exposed tool and
    /// arguments digest); the approval id is returned only when all of them match.
    pub fn open(
        &self,
        sealed: &str,
        agent: &str,
        tool: &str,
        arguments: &str,
    ) -> Result<String, Refused> {
        let state: ApprovalState =
            self.codec
                .open_json_with(sealed, CONTEXT)
                .map_err(|e| match e {
                    RequestStateError::Expired => Refused::Expired,
                    _ => Refused::Forged,
                })?;
        if state.agent != agent {
            return Err(Refused::OtherAgent);
        }
        if state.tool != tool {
            return Err(Refused::OtherTool(state.tool));
        }
        if state.arguments != arguments {
            return Err(Refused::OtherArguments);
        }
        Ok(state.approval_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secret: &str, ttl: Duration) -> Sealer {
        let config = RequestStateConfig {
            secret: Some(secret.to_owned()),
            secret_file: None,
            ttl,
        };
        Sealer::new(&config).unwrap()
    }

    fn state() -> ApprovalState {
        ApprovalState {
            approval_id: "apr_1".into(),
            agent: "bot-1".into(),
            tool: "send_email".into(),
            arguments: "sha256:aa".into(),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_state_opens_only_for_its_own_agent_tool_and_arguments() {
        let s = sealer(SECRET, Duration::from_secs(60));
        let sealed = s.seal(&state());
        assert_eq!(
            s.open(&sealed, "bot-1", "send_email", "sha256:aa"),
            Ok("apr_1".into())
        );
        assert_eq!(
            s.open(&sealed, "bot-2", "send_email", "sha256:aa"),
            Err(Refused::OtherAgent)
        );
        assert!(matches!(
            s.open(&sealed, "bot-1", "read_file", "sha256:aa"),
            Err(Refused::OtherTool(_))
        ));
        assert_eq!(
            s.open(&sealed, "bot-1", "send_email", "sha256:bb"),
            Err(Refused::OtherArguments)
        );
    }

    #[test]
    fn another_secret_or_an_altered_state_is_forged() {
        let sealed = sealer(SECRET, Duration::from_secs(60)).seal(&state());
        let other = sealer(
            "another-secret-of-at-least-32-bytes!",
            Duration::from_secs(60),
        );
        assert_eq!(
            other.open(&sealed, "bot-1", "send_email", "sha256:aa"),
            Err(Refused::Forged)
        );
        let mut altered = sealed.into_bytes();
        let i = altered.len() / 2;
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let s = sealer(SECRET, Duration::from_secs(60));
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(
            s.open(&altered, "bot-1", "send_email", "sha256:aa"),
            Err(Refused::Forged)
        );
    }

    #[test]
    fn a_state_past_its_ttl_is_expired() {
        let s = sealer(SECRET, Duration::from_millis(1));
        let sealed = s.seal(&state());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            s.open(&sealed, "bot-1", "send_email", "sha256:aa"),
            Err(Refused::Expired)
        );
    }
}
