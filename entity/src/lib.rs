//! sea-orm entities for agentauth. Data only: no logic lives here.
//!
//! Timestamps are Unix seconds (`i64`) so that SQLite and PostgreSQL store
//! and compare them the same way.

pub mod agent;
pub mod audit_log;
pub mod authorization_code;
pub mod backchannel_request;
pub mod bridge_cert;
pub mod ca_epoch;
pub mod client;
pub mod client_trace;
pub mod consent;
pub mod delegation;
pub mod event_receiver;
pub mod initial_access_token;
pub mod login_request;
pub mod passkey;
pub mod refresh_token;
pub mod revoked_token;
pub mod security_event;
pub mod session;
pub mod signing_key;
pub mod status_agent;
pub mod status_list;
pub mod status_token;
pub mod used_jti;
pub mod user;
pub mod webauthn_challenge;
