//! The gRPC surface: one tonic service per file. This is the only module that imports
//! `arbiter_proto`; requests become domain values through `convert`, and every error
//! becomes a `Status` in `status`.

pub mod admin;
pub mod audit;
pub mod control;
mod convert;
pub mod decision;
pub mod status;

use crate::engine::Principal;

/// The caller. Identity comes only from the transport; until API keys and mTLS are
/// configured every caller on the loopback interface is the anonymous developer.
fn principal<T>(_req: &tonic::Request<T>) -> Principal {
    Principal::anonymous()
}
