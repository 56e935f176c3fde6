//! agentauth: an OAuth 2.1 authorization server for AI agents and the MCP
//! servers they call.
//!
//! [`state::State::new`] builds what handlers share, [`router::build`] the
//! routes over it; `main.rs` only parses the command line and runs it.
//! The layers, and what may import what, are in the README's architecture
//! section.

pub mod accounts;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod error;
pub mod events;
pub mod fetch;
pub mod grants;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod proof;
pub mod replay;
pub mod resources;
pub mod revocation_cache;
pub mod router;
pub mod signing_pool;
pub mod state;
pub mod store;
pub mod templates;
pub mod tokens;
pub mod webauthn;
