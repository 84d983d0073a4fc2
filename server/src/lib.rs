//! Arbiter: a policy decision point for AI agents. See ARCHITECTURE.md for the map.

pub mod api;
pub mod audit;
pub mod clock;
pub mod domain;
pub mod engine;
pub mod pipeline;
pub mod policy;
pub mod state;
pub mod store;
pub mod cli;
pub mod config;
pub mod keys;
pub mod startup;
pub mod telemetry;
