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
//! - [`details`]: RFC 9396 `authorization_details`, and approvals of one
//!   MCP tool call (`mcp_tool_call`) compared with the call made.
//! - [`once`]: [`once::SpentTokens`], where approval tokens are spent
//!   (once, cluster-wide when the instances share the store), and
//!   [`once::MemorySpentTokens`], the in-process default.
//! - [`dpop`]: RFC 9449 §4.3 proof checks, `ath`, server nonces (§8).
//! - [`jwk`]: which public keys we accept, and RFC 7638 thumbprints.
//! - [`metadata`]: RFC 9728 protected resource metadata, and an axum
//!   router that serves it at the well-known paths.
//! - `guard` (feature `axum`): `Guard` in the router state and the `Caller`
//!   extractor: handlers get the verified caller, or the client gets the
//!   right challenge; `Caller::require` for per-route scopes;
//!   `Guard::check_status` (with `remote`) turns on status lists.
//! - `introspection` (feature `remote`): introspection mode, for
//!   revocation and the kill switch to bite at once.
//! - `remote` (feature `remote`): `RemoteKeys`, the authorization server's
//!   keys found by RFC 8414 discovery, refetched on an unknown `kid` at most
//!   once per interval.
//! - `report` (feature `remote`): `Reporter`, which tells the authorization
//!   server about refused tokens, for the client's trace in its connection
//!   doctor.
//! - [`status`]: Token Status List (draft-ietf-oauth-status-list) lists:
//!   packing, compression, and the claims of list tokens and of the
//!   tokens that point into them.
//! - `status_cache` (feature `remote`): `StatusListCache`, which checks a
//!   token's status against the issuer's lists, fetched, verified, cached
//!   and refreshed, so that a revoked token is refused within the list's
//!   `ttl` by a resource that verifies offline; see its policy for what
//!   happens when the lists cannot be fetched (503).
//! - [`verifier`]: [`ResourceVerifier`], the whole check of one request, and
//!   [`ResourceError`], its RFC 6750 §3 / RFC 9449 §7.1 challenges (an
//!   `axum::response::IntoResponse` with the `axum` feature).
//!
//! The authorization server uses this same code for its own checks, so a
//! token or proof it accepts is one this kit accepts.
//!
//! ## Approvals of one tool call
//!
//! Some tools should run only when their owner approved that very call
//! (deleting, paying, sending). List them in `Guard::approval_tools`
//! (feature `axum`) and put `guard::protect` in front of the MCP service:
//!
//! 1. An agent calls such a tool with its ordinary token. `protect` answers
//!    with a JSON-RPC error, code `guard::APPROVAL_REQUIRED` (-31403), whose
//!    `data` names the approval to ask for: `authorization_details` (one
//!    RFC 9396 `mcp_tool_call` entry: this resource, the tool, the exact
//!    arguments), `authorization_servers`, `resource`, `dpop_required`.
//! 2. The agent asks the authorization server for a token with exactly
//!    those details (a CIBA request); its owner sees the tool and the
//!    arguments and approves; the agent gets a DPoP-bound token, valid
//!    for at most five minutes, carrying them.
//! 3. The agent repeats the call with that token. `protect` checks that an
//!    entry covers the call ([`details::ToolCall::covers`]: tool,
//!    arguments in RFC 8785 form, this resource in `locations`), spends the
//!    token's `jti` in the guard's [`once::SpentTokens`] store, and lets
//!    the call through. The same token is refused the next time (401
//!    `invalid_token`), at this instance or, with a shared store
//!    (`Guard::spent_tokens`), at any other.
//!
//! An approval token is good for nothing else: `initialize`, `ping`,
//! `notifications/*` and `tools/list` pass (a client opens its session
//! with it) without spending it; any other call, method, or route is 403
//! `insufficient_scope` with a description; a bearer (unbound) one is 401
//! everywhere; a batch holding a tool call is 400. The boundary, for a
//! security review: `docs/approval-token-boundary.md` in the repository.
//!
//! ```
//! use agentauth_resource::{ResourceError, ResourceVerifier, StaticKeys, VerifyingKey};
//! use aws_lc_rs::rand::SystemRandom;
//! use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
//! use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
//!
//! // The issuer's key, as its JWKS would give it (normally
//! // `StaticKeys::from_jwks` or, with the `remote` feature, `RemoteKeys`).
//! let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
//! let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
//! let mut keys = StaticKeys::default();
//! keys.insert("k1", VerifyingKey { alg: Algorithm::ES256, key: DecodingKey::from_ec_der(pair.public_key().as_ref()) });
//!
//! // A token the issuer signed for this resource.
//! let mut header = Header::new(Algorithm::ES256);
//! header.kid = Some("k1".into());
//! header.typ = Some("at+jwt".into());
//! let claims = serde_json::json!({
//!     "iss": "https://auth.example.com", "sub": "user-1", "aud": "https://mcp.example.com/mcp",
//!     "client_id": "client-1", "scope": "tools:read", "jti": "t1",
//!     "iat": 1_800_000_000, "exp": 1_800_000_900,
//! });
//! let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap();
//!
//! let verifier = ResourceVerifier::new("https://auth.example.com", "https://mcp.example.com/mcp", keys);
//! let mut request = http::HeaderMap::new();
//! request.insert("authorization", format!("Bearer {token}").parse().unwrap());
//! let caller = verifier.verify("POST", "https://mcp.example.com/mcp", &request, 1_800_000_100).unwrap();
//! assert_eq!(caller.sub, "user-1");
//! assert!(agentauth_resource::verifier::require_scopes(&caller, &["tools:read"]).is_ok());
//!
//! // Expired (beyond the 30 s leeway): refused, with its challenge.
//! let err = verifier.verify("POST", "https://mcp.example.com/mcp", &request, 1_800_001_000).unwrap_err();
//! assert_eq!(err, ResourceError::InvalidToken("the access token has expired"));
//! let (status, headers) = err.headers();
//! assert_eq!(status, 401);
//! assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_token\""));
//! ```

#[cfg(feature = "bridge")]
pub mod bridge;
pub mod claims;
pub mod details;
pub mod dpop;
#[cfg(feature = "axum")]
pub mod guard;
#[cfg(feature = "remote")]
pub mod introspection;
pub mod jwk;
pub mod jwt;
pub mod metadata;
pub mod once;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "remote")]
pub mod report;
pub mod status;
#[cfg(feature = "remote")]
pub mod status_cache;
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
