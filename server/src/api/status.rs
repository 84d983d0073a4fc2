//! Errors to gRPC statuses. Invalid input carries a BadRequest field violation;
//! internal and unavailable messages stay generic (the full chain goes to the log).

use crate::domain::ParseError;
use crate::engine::EngineError;
use crate::store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Longest error message (and error detail) a reply carries, in bytes. Both travel in
/// HTTP/2 headers, and messages quote what the caller sent: unbounded, a 5 KB field
/// quoted back made the reply's headers larger than the client accepts, and the client
/// saw an HTTP/2 protocol error (INTERNAL) instead of INVALID_ARGUMENT.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `msg` cut to `MAX_MESSAGE_BYTES` at a character boundary, marked where it was cut.
pub fn bounded(msg: impl Into<String>) -> String {
    let mut msg = msg.into();
    if msg.len() > MAX_MESSAGE_BYTES {
        const CUT: &str = "… (cut)";
        let mut end = MAX_MESSAGE_BYTES - CUT.len();
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str(CUT);
    }
    msg
}

pub fn invalid(e: &ParseError) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        bounded(e.to_string()),
        ErrorDetails::with_bad_request_violation(
            bounded(e.field.clone()),
            bounded(e.problem.clone()),
        ),
    )
}

impl From<ParseError> for Status {
    fn from(e: ParseError) -> Self {
        invalid(&e)
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(p) => invalid(&p),
            EngineError::NotFound(m) => Status::not_found(bounded(m)),
            EngineError::Aborted(m) => Status::aborted(bounded(m)),
            EngineError::Lost(r) => Status::aborted(bounded(r.to_string())),
            EngineError::PermissionDenied(m) => Status::permission_denied(bounded(m)),
            EngineError::Refused { code, message } => Status::with_error_details(
                Code::PermissionDenied,
                bounded(format!("{code}: {message}")),
                ErrorDetails::with_error_info(
                    code,
                    "arbiter.dev",
                    std::collections::HashMap::new(),
                ),
            ),
            EngineError::FailedPrecondition(m) => Status::failed_precondition(bounded(m)),
            EngineError::Unavailable(m) => {
                tracing::error!(error = %m, "request failed closed");
                Status::unavailable("arbiter cannot decide right now (storage unavailable); treat as denied and retry")
            }
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            StoreError::NotFound => Status::not_found("not found"),
            StoreError::Conflict(_) => Status::aborted("conflicting change; retry"),
            StoreError::Unavailable(_) => Status::unavailable("storage unavailable; retry"),
            StoreError::Corrupt(_) => {
                Status::data_loss("stored data is corrupt; run `arbiter audit verify`")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_field_is_cut_to_the_bound_and_keeps_its_name() {
        let e = ParseError::new(
            "tls_identity",
            format!("{:?} is not an identity", "é".repeat(3000)),
        );
        let st = invalid(&e);
        assert!(
            st.message().len() <= MAX_MESSAGE_BYTES,
            "{}",
            st.message().len()
        );
        assert!(st.message().starts_with("tls_identity: "));
        assert!(st.message().ends_with("… (cut)"));
        let short = invalid(&ParseError::new("name", "must not be empty"));
        assert_eq!(short.message(), "name: must not be empty");
    }
}
