//! Async Rust client for Arbiter, the policy decision point for AI agents.
//!
//! Ask before acting, act only on ALLOW, record what happened:
//!
//! ```no_run
//! use arbiter_client::{ActionOutcome, Client};
//!
//! # async fn example() -> Result<(), arbiter_client::Error> {
//! let client = Client::connect("127.0.0.1:50051").await?;
//!
//! let decision = client
//!     .evaluate("billing-agent")
//!     .session("s-1")
//!     .tool("send_email")
//!     .cost_micro_usd(1_500)
//!     .data("user_email", Some("notifications"))
//!     .send_or_deny() // an unreachable Arbiter is a DENY
//!     .await;
//!
//! if decision.allowed() {
//!     // ... send the email ...
//!     client
//!         .record(&decision.decision_id)
//!         .outcome(ActionOutcome::Success)
//!         .cost_micro_usd(1_200)
//!         .send()
//!         .await?;
//! } else {
//!     for reason in &decision.reasons {
//!         eprintln!("denied at {}: {reason}", reason.stage);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What to expect
//!
//! - **A DENY is a value.** [`Decision`] carries the outcome and the reasons;
//!   [`Error`] means no decision was obtained.
//! - **Fail closed.** [`EvaluateBuilder::send_or_deny`] and
//!   [`Client::evaluate_or_deny`] turn every error into a synthetic DENY with a
//!   `client.unavailable` (or `client.error`) reason. [`EvaluateBuilder::send`]
//!   is the opt-out: it returns the error for you to handle.
//! - **Safe retries.** Evaluate and Record get a `request_id` (UUID v4) unless
//!   you set one, and a call that fails with `UNAVAILABLE` is sent again with the
//!   same id (2 retries by default), so a retry never spends twice. Other codes
//!   are never retried; changes without an idempotency key (halt, approve,
//!   grants) are sent once.
//! - **Deadlines.** Each call has one deadline (5 s by default) covering its
//!   retries; it is forwarded to the server as the gRPC deadline.
//! - **Circuit breaker.** After 5 consecutive outages calls fail fast with
//!   [`Error::CircuitOpen`] for 2 s, then one trial call decides whether to
//!   close again. See [`CircuitBreakerConfig`].
//!
//! Generated protobuf types live in [`proto`]; the simpler RPCs take and
//! return them directly.

#![warn(missing_docs)]

mod admin;
pub mod arguments;
mod audit;
mod breaker;
mod call;
mod client;
mod control;
mod decision;
mod error;
pub mod proof;

/// The generated `arbiter.v1` protobuf and gRPC types.
pub use arbiter_proto::v1 as proto;

pub use breaker::{CircuitBreakerConfig, CircuitState};
pub use call::ResultStream;
pub use client::{
    Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF,
    DEFAULT_TIMEOUT,
};
pub use decision::{
    Decision, DecisionOutcome, EvaluateBuilder, Reason, RecordBuilder, CLIENT_ERROR, CLIENT_STAGE,
    CLIENT_UNAVAILABLE, CLIENT_UNKNOWN_DECISION,
};
pub use error::Error;
pub use proto::{ActionOutcome, TrustLevel, Usage};
