//! The one error type of the client.
//!
//! A DENY is not an error: it is a [`Decision`](crate::Decision) value. An
//! [`Error`] means the client could not get an answer (transport, timeout,
//! circuit open) or the server refused the request itself (a gRPC status such
//! as `INVALID_ARGUMENT` or `PERMISSION_DENIED`).

use std::error::Error as StdError;
use std::fmt::Write as _;

use tonic::Code;
use tonic_types::StatusExt;

/// Everything that can go wrong on a call to Arbiter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection could not be set up (bad endpoint, refused connection,
    /// connect timeout). Only returned by [`ClientBuilder::connect`](crate::ClientBuilder::connect);
    /// connection failures on later calls surface as `Status { code: Unavailable, .. }`.
    #[error("cannot connect to Arbiter: {}", source_chain(.0))]
    Transport(#[from] tonic::transport::Error),

    /// The call did not finish within its deadline (the client's own timer, or
    /// `DEADLINE_EXCEEDED` from the server).
    #[error("deadline exceeded: Arbiter did not answer in time")]
    Timeout,

    /// The server answered with a non-OK gRPC status.
    #[error("{}", status_display(*.code, .message, .field.as_deref()))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message, with the transport cause appended when there is one.
        message: String,
        /// The offending request field, from the first `google.rpc.BadRequest`
        /// field violation in the status details (e.g. `"agent_id"`).
        field: Option<String>,
        /// The machine-readable refusal code, from the `google.rpc.ErrorInfo`
        /// reason in the status details (e.g. `"delegation.escalation"`).
        reason: Option<String>,
    },

    /// The client-side circuit breaker is open after repeated connection
    /// failures; the call was not sent. It is retried automatically once the
    /// cool-down has passed.
    #[error("circuit breaker open: Arbiter was unreachable on recent calls; failing fast")]
    CircuitOpen,

    /// The client was configured with a value it cannot use (for example an
    /// API key that is not a valid header value).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The gRPC code that best describes this error.
    ///
    /// `Transport` and `CircuitOpen` report `Unavailable`, `Timeout` reports
    /// `DeadlineExceeded` and `InvalidConfig` reports `InvalidArgument`.
    pub fn code(&self) -> Code {
        match self {
            Error::Transport(_) | Error::CircuitOpen => Code::Unavailable,
            Error::Timeout => Code::DeadlineExceeded,
            Error::Status { code, .. } => *code,
            Error::InvalidConfig(_) => Code::InvalidArgument,
        }
    }

    /// True when the server could not be reached: a transport failure, an
    /// `UNAVAILABLE` status or an open circuit breaker.
    pub fn is_unavailable(&self) -> bool {
        self.code() == Code::Unavailable
    }

    /// True when the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// The offending request field named by the server, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Status { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The machine-readable refusal code the server put in the status's
    /// `google.rpc.ErrorInfo` (e.g. `"delegation.escalation"` or `"halt.engaged"`
    /// on a refused Delegate), if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Status { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Only `UNAVAILABLE` is retried: the request did not reach a handler, and
    /// Evaluate and Record carry a `request_id`, so a repeat cannot spend twice.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Status {
                code: Code::Unavailable,
                ..
            }
        )
    }

    /// Failures that say "the server is not answering", which are what the
    /// circuit breaker counts. A hung server (timeout) counts as much as a dead one.
    pub(crate) fn is_outage(&self) -> bool {
        matches!(
            self,
            Error::Transport(_)
                | Error::Timeout
                | Error::Status {
                    code: Code::Unavailable,
                    ..
                }
        )
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        // The channel enforces the deadline we send as `grpc-timeout` itself and
        // reports it as CANCELLED with a `TimeoutExpired` cause.
        if status.code() == Code::DeadlineExceeded || caused_by_timeout(&status) {
            return Error::Timeout;
        }
        let field = status
            .get_details_bad_request()
            .and_then(|bad| bad.field_violations.into_iter().next())
            .map(|violation| violation.field)
            .filter(|field| !field.is_empty());
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .filter(|reason| !reason.is_empty());
        let mut message = status.message().to_owned();
        // Connection failures carry the useful part ("Connection refused") in
        // the source chain, not in the message.
        append_causes(&mut message, status.source());
        Error::Status {
            code: status.code(),
            message,
            field,
            reason,
        }
    }
}

fn caused_by_timeout(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(cause) = source {
        if cause.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The canonical upper-case name of a gRPC code, e.g. `INVALID_ARGUMENT`.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_display(code: Code, message: &str, field: Option<&str>) -> String {
    let mut out = code_name(code).to_owned();
    if let Some(field) = field {
        let _ = write!(out, " ({field})");
    }
    if !message.is_empty() {
        let _ = write!(out, ": {message}");
    }
    out
}

/// `tonic::transport::Error` displays only "transport error"; the cause is in its sources.
pub(crate) fn source_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    append_causes(&mut out, Some(err));
    if out.is_empty() {
        out = err.to_string();
    }
    out
}

/// Appends each cause's text to `out`, skipping empty, generic and repeated ones.
fn append_causes(out: &mut String, mut source: Option<&(dyn StdError + 'static)>) {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && text != "transport error" && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn bad_request_details_name_the_field() {
        let details =
            ErrorDetails::with_bad_request_violation("agent_id", "must be 1–128 characters, got 0");
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "agent_id: must be 1–128 characters, got 0",
            details,
        );
        let err = Error::from(status);
        match &err {
            Error::Status {
                code,
                message,
                field,
                reason,
            } => {
                assert_eq!(*code, Code::InvalidArgument);
                assert_eq!(*reason, None);
                assert_eq!(message, "agent_id: must be 1–128 characters, got 0");
                assert_eq!(field.as_deref(), Some("agent_id"));
            }
            other => panic!("expected Status, got {other:?}"),
        }
        assert_eq!(err.field(), Some("agent_id"));
        assert_eq!(
            err.to_string(),
            "INVALID_ARGUMENT (agent_id): agent_id: must be 1–128 characters, got 0"
        );
        assert!(!err.is_unavailable());
        assert!(!err.is_retryable());
    }

    #[test]
    fn the_first_of_several_violations_is_reported() {
        let mut details = ErrorDetails::new();
        details
            .add_bad_request_violation("action.tool", "too long")
            .add_bad_request_violation("session_id", "bad character");
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "bad", details);
        assert_eq!(Error::from(status).field(), Some("action.tool"));
    }

    #[test]
    fn a_status_without_details_has_no_field() {
        let err = Error::from(tonic::Status::permission_denied(
            "agent may not act for billing",
        ));
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.field(), None);
        assert_eq!(
            err.to_string(),
            "PERMISSION_DENIED: agent may not act for billing"
        );
    }

    #[test]
    fn error_info_details_give_the_refusal_reason() {
        let details = ErrorDetails::with_error_info(
            "delegation.escalation",
            "arbiter.dev",
            std::collections::HashMap::new(),
        );
        let status = tonic::Status::with_error_details(
            Code::PermissionDenied,
            "delegation.escalation: tools: admin_* is not inside the parent's rule",
            details,
        );
        let err = Error::from(status);
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.reason(), Some("delegation.escalation"));
        assert_eq!(err.field(), None);
        assert_eq!(
            Error::from(tonic::Status::permission_denied("no")).reason(),
            None
        );
        assert_eq!(Error::Timeout.reason(), None);
    }

    #[test]
    fn unavailable_is_retryable_and_an_outage() {
        let err = Error::from(tonic::Status::unavailable("tcp connect error"));
        assert!(err.is_unavailable());
        assert!(err.is_retryable());
        assert!(err.is_outage());
    }

    #[test]
    fn internal_is_neither_retried_nor_counted_as_an_outage() {
        let err = Error::from(tonic::Status::internal("internal error"));
        assert!(!err.is_retryable());
        assert!(!err.is_outage());
    }

    #[test]
    fn deadline_exceeded_from_the_server_is_a_timeout() {
        let err = Error::from(tonic::Status::deadline_exceeded("too slow"));
        assert!(err.is_timeout());
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(!err.is_retryable());
        assert!(err.is_outage());
    }

    #[test]
    fn the_channels_own_deadline_expiry_is_a_timeout() {
        let status = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status.code(), Code::Cancelled);
        assert!(Error::from(status).is_timeout());
        assert!(!Error::from(tonic::Status::cancelled("client went away")).is_timeout());
    }

    #[test]
    fn a_connection_failure_keeps_its_cause_once() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let err = Error::from(status);
        assert!(err.is_unavailable());
        assert_eq!(err.to_string(), "UNAVAILABLE: Connection refused");
    }

    #[test]
    fn circuit_open_reports_unavailable_but_is_not_retried() {
        assert!(Error::CircuitOpen.is_unavailable());
        assert!(!Error::CircuitOpen.is_retryable());
        assert!(!Error::CircuitOpen.is_outage());
    }
}
