//! Who is calling. An MCP client presents an Arbiter agent API key; the gateway asks
//! Arbiter (`WhoAmI`, with that key) which principal it is and which agent it acts for.
//! The agent id therefore comes from Arbiter's own authentication, never from the
//! request, and every later Evaluate and Record is sent with the client's key, so
//! Arbiter's role table decides again and the audit log names the agent's principal.

use arbiter_client::{proto, Client};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Code;

/// A successful lookup is reused this long, so a burst of calls costs one WhoAmI.
/// Revocation still applies at once to decisions: every Evaluate carries the key.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Bound on remembered keys; the cache is cleared when it is full.
const CACHE_MAX: usize = 10_000;

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The one agent the key's principal acts for.
    pub agent: String,
    /// The principal's name (for logs).
    pub principal: String,
    /// An Arbiter client that authenticates with the caller's own key.
    pub arbiter: Client,
}

impl Caller {
    /// The same caller whose Arbiter calls carry `trace`, so Arbiter's spans for them
    /// are children of the request's span. A context the client cannot send as
    /// metadata is dropped: it only places spans.
    pub fn traced(&self, trace: Option<&crate::trace::TraceContext>) -> Caller {
        let Some(t) = trace else {
            return self.clone();
        };
        match self
            .arbiter
            .with_trace_context(&t.traceparent, t.tracestate.as_deref())
        {
            Ok(arbiter) => Caller {
                arbiter,
                ..self.clone()
            },
            Err(_) => self.clone(),
        }
    }
}

/// Why a request was not authenticated. `Display` is the client-facing text.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send Authorization: Bearer <an Arbiter agent API key>")]
    Missing,
    #[error("Arbiter refused the API key")]
    Refused,
    #[error("{0}")]
    Forbidden(String),
    #[error("Arbiter is unreachable, so nothing can be decided or forwarded; try again")]
    Unavailable,
}

pub struct Identities {
    base: Client,
    cache: Mutex<HashMap<[u8; 32], (Instant, Caller)>>,
}

impl Identities {
    pub fn new(base: Client) -> Self {
        Self {
            base,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller for an `Authorization` header value.
    pub async fn for_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let key = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        self.for_key(key).await
    }

    pub async fn for_key(&self, key: &str) -> Result<Caller, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(c) = self.cached(&digest) {
            return Ok(c);
        }
        let arbiter = self
            .base
            .with_api_key(key)
            .map_err(|_| AuthError::Refused)?;
        let who = arbiter.who_am_i().await.map_err(|e| match e.code() {
            Code::Unauthenticated | Code::PermissionDenied => AuthError::Refused,
            _ => {
                tracing::warn!(error = %e, "WhoAmI failed");
                AuthError::Unavailable
            }
        })?;
        let agent = single_agent(&who)?;
        let caller = Caller {
            agent,
            principal: who.principal,
            arbiter,
        };
        let mut cache = self.cache.lock().expect("identity cache lock");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, (Instant::now(), caller.clone()));
        Ok(caller)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Caller> {
        let cache = self.cache.lock().expect("identity cache lock");
        cache
            .get(digest)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, c)| c.clone())
    }
}

/// The agent a principal acts for: it must hold the agent role and be bound to exactly
/// one agent id (no glob), because the gateway may not pick one from the request.
pub fn single_agent(who: &proto::WhoAmIResponse) -> Result<String, AuthError> {
    let is_agent = who.roles.contains(&(proto::Role::Agent as i32));
    if !is_agent {
        return Err(AuthError::Forbidden(format!(
            "principal {} does not hold the agent role; the MCP gateway needs an agent key",
            who.principal
        )));
    }
    match who.agents.as_slice() {
        [one] if !one.contains(['*', '?', '[', ']', '{', '}']) => Ok(one.clone()),
        _ => Err(AuthError::Forbidden(format!(
            "principal {} acts for {:?}; the MCP gateway needs a key bound to exactly one agent id \
             (arbiter principals create NAME --role agent --agent ID)",
            who.principal, who.agents
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(roles: &[proto::Role], agents: &[&str]) -> proto::WhoAmIResponse {
        proto::WhoAmIResponse {
            principal: "p".into(),
            roles: roles.iter().map(|r| *r as i32).collect(),
            agents: agents.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn an_agent_key_bound_to_one_id_names_that_agent() {
        let agent = single_agent(&who(&[proto::Role::Agent], &["bot-1"])).unwrap();
        assert_eq!(agent, "bot-1");
    }

    #[test]
    fn globs_several_agents_and_other_roles_are_refused() {
        for w in [
            who(&[proto::Role::Agent], &["bot-*"]),
            who(&[proto::Role::Agent], &["a", "b"]),
            who(&[proto::Role::Agent], &[]),
            who(&[proto::Role::Operator], &["bot-1"]),
        ] {
            assert!(
                matches!(single_agent(&w), Err(AuthError::Forbidden(_))),
                "{w:?}"
            );
        }
    }
}
