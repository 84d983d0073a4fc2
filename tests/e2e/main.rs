//! End-to-end tests: each test starts the real `arbiter` binary (see `harness`) and
//! talks to it only through `arbiter-client`, the CLI and the files it leaves on disk.
//!
//! Build the binary first: `cargo build -p arbiter-server --bins` (scripts/test.sh does).

mod harness;

mod approval;
mod arguments;
mod audit;
mod auth;
mod budget;
mod cases;
mod checkpoint;
mod consent;
mod console;
mod delegation;
mod demo;
mod faults;
mod halt;
mod keys;
mod mcp_gateway;
mod metrics;
mod notify;
mod pipeline;
mod policy;
mod postgres;
mod presence;
mod random_input;
mod record;
mod replicas;
mod report;
mod restart;
mod retries;
mod scope;
mod service;
mod shutdown;
mod spoofing;
mod streams;
mod tamper;
mod tls;
mod tool_pins;
mod traces;
mod trust;
mod validation;
