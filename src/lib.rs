//! agentauth: an OAuth 2.1 authorization server for AI agents and the MCP
//! servers they call.
//!
//! `app::build` assembles the router from an [`app::AppState`];
//! `main.rs` only parses the command line and runs it.

pub mod accounts;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fetch;
pub mod grants;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod replay_batch;
pub mod revocation_cache;
pub mod signing_pool;
pub mod store;
