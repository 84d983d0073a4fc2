//! Caller identity. An interceptor turns the API key on the transport into a
//! `Principal` request extension; handlers read identity only there (never from a
//! request field) and check roles with `authorize`.
//!
//! Development mode: while no principal has ever been created, every caller is the
//! anonymous developer with all roles, and `startup` refuses non-loopback addresses.
//! Creating the first principal switches authentication on for good.

mod keys;

pub use keys::{hash_key, new_key, KEY_PREFIX};

use crate::domain::{Principal, Role};
use crate::store::PrincipalRow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tonic::{Request, Status};

/// Active principals by key hash.
#[derive(Debug, Default)]
pub struct PrincipalBook {
    by_hash: HashMap<String, Principal>,
    /// True once any principal exists (revoked ones count).
    required: bool,
}

impl PrincipalBook {
    pub fn from_rows(rows: &[PrincipalRow]) -> Self {
        let mut book = Self::default();
        for r in rows {
            book.add(r);
        }
        book
    }

    pub fn add(&mut self, r: &PrincipalRow) {
        self.required = true;
        if r.revoked_ms.is_some() {
            self.by_hash.remove(&r.key_hash);
            return;
        }
        match Principal::new(r.name.clone(), r.roles.clone(), r.agents.clone()) {
            Ok(p) => {
                self.by_hash.insert(r.key_hash.clone(), p);
            }
            Err(e) => {
                tracing::error!(principal = %r.name, error = %e, "principal has an invalid agent pattern; it cannot authenticate")
            }
        }
    }

    pub fn revoke(&mut self, name: &str) {
        self.by_hash.retain(|_, p| p.name != name);
    }

    /// An active principal by name.
    pub fn by_name(&self, name: &str) -> Option<&Principal> {
        self.by_hash.values().find(|p| p.name == name)
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// The principal for an API key, if it is active.
    pub fn lookup(&self, key: &str) -> Option<Principal> {
        // The key is hashed first, so the map lookup compares hashes, not secrets.
        self.by_hash.get(&hash_key(key)).cloned()
    }
}

/// Why a call was refused, for the audit log.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub principal: String,
    pub rpc: &'static str,
    pub reason: String,
}

/// Reads the key from `authorization: Bearer <key>` (or `x-api-key`).
fn presented_key<T>(req: &Request<T>) -> Option<String> {
    let md = req.metadata();
    if let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
                .to_owned(),
        );
    }
    md.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// The tonic interceptor: authenticates every call to an arbiter.v1 service.
#[derive(Clone)]
pub struct Authenticator {
    pub book: Arc<RwLock<PrincipalBook>>,
    /// Where refusals go to be audited (sent off the request path).
    pub refusals: tokio::sync::mpsc::Sender<Refusal>,
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        if !book.required() {
            req.extensions_mut().insert(Principal::anonymous());
            return Ok(req);
        }
        let key = presented_key(&req);
        match key.as_deref().and_then(|k| book.lookup(k)) {
            Some(p) => {
                req.extensions_mut().insert(p);
                Ok(req)
            }
            None => {
                let reason = if key.is_some() {
                    "unknown or revoked API key"
                } else {
                    "no API key presented"
                };
                let _ = self.refusals.try_send(Refusal {
                    principal: "unauthenticated".into(),
                    rpc: "*",
                    reason: reason.into(),
                });
                Err(Status::unauthenticated(format!(
                    "{reason}; send `authorization: Bearer <key>` (create keys with `arbiter principals create`)"
                )))
            }
        }
    }
}

/// What an RPC requires of its caller.
pub enum Access<'a> {
    /// Any of these roles.
    Roles(&'a [Role]),
    /// An `agent` principal bound to this agent id.
    ActFor(&'a str),
    /// An `agent` principal bound to this agent, or any of these roles.
    ActForOr(&'a str, &'a [Role]),
}

/// The authenticated principal, if it may make this call.
pub fn authorize<T>(
    req: &Request<T>,
    rpc: &'static str,
    access: Access<'_>,
) -> Result<Principal, Refusal> {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return Err(Refusal {
            principal: "unauthenticated".into(),
            rpc,
            reason: "no authenticated principal".into(),
        });
    };
    let roles_ok = |roles: &[Role]| roles.iter().any(|r| p.has(*r));
    let (ok, need) = match access {
        Access::Roles(roles) => (
            roles_ok(roles),
            format!("one of the roles {}", names(roles)),
        ),
        Access::ActFor(agent) => (
            p.acts_for(agent),
            format!("an agent principal bound to agent {agent}"),
        ),
        Access::ActForOr(agent, roles) => (
            p.acts_for(agent) || roles_ok(roles),
            format!(
                "an agent principal bound to agent {agent} or one of the roles {}",
                names(roles)
            ),
        ),
    };
    if ok {
        Ok(p)
    } else {
        Err(Refusal {
            principal: p.name.clone(),
            rpc,
            reason: format!("{rpc} requires {need}"),
        })
    }
}

fn names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}
