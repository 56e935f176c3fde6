#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! One integration binary. Every storage-touching case runs twice: on a
//! fresh SQLite file and on a fresh PostgreSQL schema (127.0.0.1:5432,
//! user postgres, database test). PostgreSQL cases fail, never skip, when
//! the server is unreachable.

mod helpers;

mod agents;
mod boundary_console_agents;
mod boundary_federation;
mod boundary_kill;
mod boundary_login;
mod boundary_passport;
mod bridge;
mod ciba;
mod code_flow;
mod consent;
mod console;
mod crash;
mod dpop;
mod events;
mod faults;
mod federation;
mod hardening;
mod introspect_revoke;
mod keys;
mod login;
mod mcp;
mod mcp_clients;
mod metadata;
mod ops;
mod passkeys;
mod policy;
mod private_key_jwt;
mod processes;
mod register;
mod resource;
mod status_lists;
mod token;
