//! The gRPC surface: one tonic service per file. This is the only module that imports
//! `arbiter_proto`; requests become domain values through `convert`, and every error
//! becomes a `Status` in `status`.

pub mod admin;
pub mod audit;
pub mod control;
mod convert;
pub mod decision;
#[cfg(test)]
mod props;
pub mod status;
mod streams;
mod tool_pins;

use crate::auth::{self as authn, Access};
use crate::domain::{Principal, Role};
use crate::engine::Engine;
use tonic::{Request, Status};

/// Roles that may read run-time state.
pub(crate) const READERS: &[Role] = &[Role::Operator, Role::Admin, Role::Auditor];
/// Roles that may change trust and consent, approve and halt.
pub(crate) const OPERATORS: &[Role] = &[Role::Operator, Role::Admin];
/// Roles that may read the audit log.
pub(crate) const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
/// Only admins manage principals.
const ADMINS: &[Role] = &[Role::Admin];
/// Any authenticated caller.
const ANYONE: &[Role] = &[Role::Agent, Role::Operator, Role::Admin, Role::Auditor];

/// The caller, if it may make this call. Identity comes only from the transport (the
/// authenticator's request extension); a refusal is audited before it is returned.
async fn authorize<T>(
    engine: &Engine,
    req: &Request<T>,
    rpc: &'static str,
    access: Access<'_>,
) -> Result<Principal, Status> {
    match authn::authorize(req, rpc, access) {
        Ok(p) => Ok(p),
        Err(refusal) => {
            let message = refusal.reason.clone();
            engine.record_refusal(refusal).await;
            Err(Status::permission_denied(message))
        }
    }
}

/// A principal that also acts for an agent must not govern that agent: it cannot raise
/// its trust, grant it consent, or lift a halt on it (or a global one). SPEC §5: "an
/// agent can never clear its own halt". `agent` is None for global targets.
async fn refuse_self_governance(
    engine: &Engine,
    who: &Principal,
    agent: Option<&str>,
    rpc: &'static str,
) -> Result<(), Status> {
    if who.governs(agent) {
        return Ok(());
    }
    let reason = match agent {
        Some(a) => format!(
            "{rpc}: {} acts for agent {a} and cannot govern it",
            who.name
        ),
        None => format!(
            "{rpc}: {} holds the agent role and cannot lift a global halt",
            who.name
        ),
    };
    engine
        .record_refusal(authn::Refusal {
            principal: who.name.clone(),
            rpc,
            reason: reason.clone(),
        })
        .await;
    Err(Status::permission_denied(reason))
}
