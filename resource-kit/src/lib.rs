//! # agentauth-resource
//!
//! What a resource server (an MCP server) needs to accept agentauth tokens,
//! and nothing more: no database, template, password or HTTP-server crate
//! in the default features.
//!
//! - [`claims`]: RFC 9068 access-token claims, with room for RFC 8693 `act`
//!   and `may_act`, agent and owner identifiers, and extension claims.
//! - [`jwt`]: compact JWS verification with the algorithm pinned per key
//!   ([`KeySource`]), never read from the token.
//! - [`dpop`]: RFC 9449 §4.3 proof checks, `ath`, server nonces (§8).
//! - [`jwk`]: which public keys we accept, and RFC 7638 thumbprints.
//! - [`metadata`]: RFC 9728 protected resource metadata, and an axum
//!   router that serves it at the well-known paths.
//! - `guard` (feature `axum`): `Guard` in the router state and the `Caller`
//!   extractor: handlers get the verified caller, or the client gets the
//!   right challenge; `Caller::require` for per-route scopes.
//! - `introspection` (feature `remote`): introspection mode, for
//!   revocation and the kill switch to bite at once.
//! - `remote` (feature `remote`): `RemoteKeys`, the authorization server's
//!   keys found by RFC 8414 discovery, refetched on an unknown `kid` at most
//!   once per interval.
//! - [`verifier`]: [`ResourceVerifier`], the whole check of one request, and
//!   [`ResourceError`], its RFC 6750 §3 / RFC 9449 §7.1 challenges (an
//!   `axum::response::IntoResponse` with the `axum` feature).
//!
//! The authorization server uses this same code for its own checks, so a
//! token or proof it accepts is one this kit accepts.

pub mod claims;
pub mod dpop;
#[cfg(feature = "axum")]
pub mod guard;
#[cfg(feature = "remote")]
pub mod introspection;
pub mod jwk;
pub mod jwt;
pub mod metadata;
#[cfg(feature = "remote")]
pub mod remote;
pub mod verifier;

pub use claims::{ACCESS_TOKEN_TYP, AccessTokenClaims, Actor, Audience, Confirmation};
pub use jwt::{KeySource, StaticKeys, VerifyError, VerifyingKey, verify_jwt};
pub use metadata::ProtectedResourceMetadata;
pub use verifier::{ChallengeContext, ResourceError, ResourceVerifier, TokenKind, Verified};

/// SHA-256, the one digest the protocols here use.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}
