//! Domain types. Every value here is built through `parse`/`TryFrom`, so the rest of
//! the server never sees an unchecked id, amount or pattern. No async, no I/O.

mod action;
mod api_url;
mod arguments;
mod ids;
mod money;
mod pattern;
mod period;
mod principal;
#[cfg(test)]
pub(crate) mod props;
pub mod text;
mod tls_identity;
mod trust;

pub use action::{Action, ActionDigest, ActionJson, ApiCall, DataAccess, Estimate};
pub use api_url::{canonical_url, canonical_url_glob};
pub use arguments::{
    Arguments, MAX_ARGUMENT_BYTES, MAX_ARGUMENT_DEPTH, MAX_ARGUMENT_KEY_CHARS, MAX_ARGUMENT_NODES,
};
pub use ids::{AgentId, Id, SessionId};
pub use money::{MicroUsd, MAX_MICRO_USD, MAX_TOKENS};
pub use pattern::{ApiPattern, GlobList};
pub use period::Period;
pub use principal::{Principal, Role};
pub use tls_identity::{TlsIdentity, MAX_TLS_IDENTITY};
pub use trust::TrustLevel;

/// A request value that failed validation, naming the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ParseError {
    /// Dotted path of the offending field, e.g. `action.estimate.micro_usd`.
    pub field: String,
    /// What is wrong, including the limit, e.g. "must be 1–128 characters, got 0".
    pub problem: String,
}

impl ParseError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a free-text field's length in characters.
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), ParseError> {
    let n = value.chars().count();
    if n < min || n > max {
        let range = if min == 0 {
            format!("at most {max} characters")
        } else {
            format!("{min}–{max} characters")
        };
        return Err(ParseError::new(field, format!("must be {range}, got {n}")));
    }
    Ok(())
}

/// Checks a string map (context, metadata) against entry, key and value limits.
pub fn check_map<'a>(
    field: &str,
    entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    max_entries: usize,
) -> Result<(), ParseError> {
    if entries.len() > max_entries {
        return Err(ParseError::new(
            field,
            format!(
                "must have at most {max_entries} entries, got {}",
                entries.len()
            ),
        ));
    }
    for (k, v) in entries {
        let ok_key = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok_key {
            return Err(ParseError::new(
                format!("{field}[{}]", k.chars().take(64).collect::<String>()),
                "keys must be 1–64 characters of [A-Za-z0-9._-]",
            ));
        }
        check_len(&format!("{field}[{k}]"), v, 0, 1024)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_len_names_the_limit_and_the_actual_length() {
        let err = check_len("agent_id", "", 1, 128).unwrap_err();
        assert_eq!(err.to_string(), "agent_id: must be 1–128 characters, got 0");
    }
}
