//! The exception hierarchy, defined here and re-exported by the facade.
//!
//! ```text
//! ArbiterError                  every error this package raises
//! ├── Unavailable               Arbiter could not be asked (refused, unreachable, TLS failed, breaker open)
//! │   └── DeadlineExceeded      it did not answer in time
//! ├── InvalidArgument           the server refused a request field (`field` names it)
//! ├── PermissionDenied          the caller's principal may not do this
//! │   └── Unauthenticated       no valid API key was presented
//! ├── NotFound                  no such approval, grant, principal, ...
//! ├── AlreadyExists / FailedPrecondition
//! ├── Denied                    raised by guard/governed/raise_for_outcome, carries the decision
//! │   └── Halted                the deciding reason is a halt (kill switch)
//! ├── ApprovalRequired          PENDING_APPROVAL, carries the approval id
//! ├── ApprovalDenied            a human denied the approval
//! └── ApprovalTimeout           no grant before the deadline, or the approval expired
//! ```
//!
//! Every instance has `code` (the gRPC code name, or a name such as `"DENIED"` for
//! the decision errors), `message`, `field` (the offending request field or `None`)
//! and `reason` (the server's machine-readable refusal code from
//! `google.rpc.ErrorInfo`, e.g. `"delegation.escalation"`, or `None`).

use arbiter_client::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tonic::Code;

create_exception!(
    arbiter,
    ArbiterError,
    PyException,
    "Base class of every error raised by the arbiter package."
);
create_exception!(
    arbiter,
    Unavailable,
    ArbiterError,
    "Arbiter could not be asked: connection refused, unreachable, the TLS handshake failed, or the client's circuit breaker is open."
);
create_exception!(
    arbiter,
    DeadlineExceeded,
    Unavailable,
    "Arbiter did not answer within the call's deadline."
);
create_exception!(
    arbiter,
    InvalidArgument,
    ArbiterError,
    "The server refused a request field; `field` names it when the server said which."
);
create_exception!(
    arbiter,
    PermissionDenied,
    ArbiterError,
    "The caller's principal may not make this call, or the server refused it; `reason` holds the refusal code (e.g. \"delegation.escalation\") when the server gave one."
);
create_exception!(
    arbiter,
    Unauthenticated,
    PermissionDenied,
    "No valid API key was presented to a server that requires one."
);
create_exception!(
    arbiter,
    NotFound,
    ArbiterError,
    "The named approval, grant, principal or entry does not exist."
);
create_exception!(
    arbiter,
    AlreadyExists,
    ArbiterError,
    "The thing to create exists already (e.g. a principal name)."
);
create_exception!(
    arbiter,
    FailedPrecondition,
    ArbiterError,
    "The request cannot apply in the current state (e.g. deciding an approval twice)."
);
create_exception!(
    arbiter,
    Denied,
    ArbiterError,
    "Arbiter denied the action; `decision` holds the Decision and its reasons."
);
create_exception!(
    arbiter,
    Halted,
    Denied,
    "Arbiter denied the action because a halt (kill switch) applies."
);
create_exception!(
    arbiter,
    ApprovalRequired,
    ArbiterError,
    "The action needs human approval first; `approval_id` names the approval."
);
create_exception!(
    arbiter,
    ApprovalDenied,
    ArbiterError,
    "A human denied the approval; `approval` holds it, with who decided and why."
);
create_exception!(
    arbiter,
    ApprovalTimeout,
    ArbiterError,
    "No grant arrived before the deadline, or the approval expired."
);

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ArbiterError", py.get_type::<ArbiterError>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("DeadlineExceeded", py.get_type::<DeadlineExceeded>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("Unauthenticated", py.get_type::<Unauthenticated>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("FailedPrecondition", py.get_type::<FailedPrecondition>())?;
    m.add("Denied", py.get_type::<Denied>())?;
    m.add("Halted", py.get_type::<Halted>())?;
    m.add("ApprovalRequired", py.get_type::<ApprovalRequired>())?;
    m.add("ApprovalDenied", py.get_type::<ApprovalDenied>())?;
    m.add("ApprovalTimeout", py.get_type::<ApprovalTimeout>())?;
    Ok(())
}

/// Turns a client error into the matching exception, with `code`, `message` and
/// `field` set on it.
pub fn to_py_err(py: Python<'_>, error: &Error) -> PyErr {
    let code = error.code();
    let message = error.to_string();
    let err = match code {
        _ if transport_failure(error) => Unavailable::new_err(message.clone()),
        Code::DeadlineExceeded => DeadlineExceeded::new_err(message.clone()),
        Code::Unavailable => Unavailable::new_err(message.clone()),
        Code::InvalidArgument | Code::OutOfRange => InvalidArgument::new_err(message.clone()),
        Code::PermissionDenied => PermissionDenied::new_err(message.clone()),
        Code::Unauthenticated => Unauthenticated::new_err(message.clone()),
        Code::NotFound => NotFound::new_err(message.clone()),
        Code::AlreadyExists => AlreadyExists::new_err(message.clone()),
        Code::FailedPrecondition => FailedPrecondition::new_err(message.clone()),
        _ => ArbiterError::new_err(message.clone()),
    };
    let set = || -> PyResult<()> {
        let value = err.value(py);
        value.setattr("code", code_name(code))?;
        value.setattr("message", message.as_str())?;
        value.setattr("field", error.field())?;
        value.setattr("reason", error.reason())?;
        Ok(())
    };
    match set() {
        Ok(()) => err,
        Err(setattr_failed) => setattr_failed,
    }
}

/// A call that got no answer from Arbiter because the connection itself failed,
/// though its code is not UNAVAILABLE: the channel reports a connection torn down
/// mid-call as CANCELLED, and a peer that does not speak gRPC over HTTP/2 (a TLS
/// server dialled in plaintext, a refused TLS handshake under TLS 1.3) as an h2 or
/// transport error with INTERNAL or UNKNOWN. The server itself never answers with
/// those texts, so these are `Unavailable` (and `guard` fails closed on them).
fn transport_failure(error: &Error) -> bool {
    match error.code() {
        Code::Cancelled => true,
        Code::Internal | Code::Unknown => {
            let text = error.to_string();
            ["h2 protocol error", "transport error", "connection error"]
                .iter()
                .any(|marker| text.contains(marker))
        }
        _ => false,
    }
}

/// The gRPC code names, as the server and the Rust client spell them.
fn code_name(code: Code) -> &'static str {
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
