//! Arbiter: a policy decision point for AI agents. See ARCHITECTURE.md for the map.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod delegation;
pub mod domain;
pub mod engine;
pub mod jcs;
pub mod keys;
pub mod mcp_gateway;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod policy;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
