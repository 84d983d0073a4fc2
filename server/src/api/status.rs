//! Errors to gRPC statuses. Invalid input carries a BadRequest field violation;
//! internal and unavailable messages stay generic (the full chain goes to the log).

use crate::domain::ParseError;
use crate::engine::EngineError;
use crate::store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub fn invalid(e: &ParseError) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        e.to_string(),
        ErrorDetails::with_bad_request_violation(e.field.clone(), e.problem.clone()),
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
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::Aborted(m) => Status::aborted(m),
            EngineError::Lost(r) => Status::aborted(r.to_string()),
            EngineError::PermissionDenied(m) => Status::permission_denied(m),
            EngineError::Refused { code, message } => Status::with_error_details(
                Code::PermissionDenied,
                format!("{code}: {message}"),
                ErrorDetails::with_error_info(
                    code,
                    "arbiter.dev",
                    std::collections::HashMap::new(),
                ),
            ),
            EngineError::FailedPrecondition(m) => Status::failed_precondition(m),
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
