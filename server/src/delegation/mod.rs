//! Delegation tokens (SPEC §3.5): an agent hands part of its scope to another agent as
//! an Ed25519-signed capability. Evaluate enforces policy ∩ token ∩ every issuer's
//! policy, so a token never grants more than its issuers may do *now*, and a halt on
//! an issuer stops the work it delegated. Format in docs/policy.md §12.

mod narrow;
#[cfg(test)]
mod props;
mod token;

pub use narrow::{api_covered, tool_covered};
pub use token::{Grant, TokenCheck, TokenFault, TokenKeys, VerifiedToken, TOKEN_PREFIX};
