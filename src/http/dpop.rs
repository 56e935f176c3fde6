//! DPoP at our endpoints: the header extractor (RFC 9449 §4.3 check 1)
//! and the proof check with replay protection.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use moka::ops::compute::{CompResult, Op};

use crate::error::{Error, OAuthError};
use crate::oauth::single_use::SpentUntil;
use crate::replay::Replay;
use crate::state::State;
use agentauth_resource::dpop::{self, DpopError, Expectations};

use crate::proof::{CheckedProof, Spend};

/// The `DPoP` request header: absent, or exactly one.
#[derive(Debug, Clone, Default)]
pub struct DpopHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for DpopHeader {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, OAuthError> {
        Self::from_headers(&parts.headers)
    }
}

impl DpopHeader {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<Self, OAuthError> {
        let mut values = headers.get_all("dpop").iter();
        let Some(first) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(OAuthError::invalid_dpop_proof(
                "exactly one DPoP header is allowed",
            ));
        }
        let proof = first
            .to_str()
            .map_err(|_| OAuthError::invalid_dpop_proof("DPoP header is not ASCII"))?;
        Ok(Self(Some(proof.trim().to_string())))
    }
}

/// Checks a proof sent to one of our endpoints and starts spending its
/// `jti` (keyed by thumbprint and jti, RFC 9449 §11.1); the caller confirms
/// the spend ([`crate::proof::Spend::confirm`]) before it answers. Failures
/// are the token endpoint's shapes: 400 `invalid_dpop_proof` or
/// `use_dpop_nonce`.
pub async fn check(
    state: &State,
    proof: &str,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
) -> Result<CheckedProof, Error> {
    check_nonce_by(
        state,
        proof,
        htm,
        htu,
        access_token,
        state.config.dpop_nonce,
    )
    .await
}

/// [`check`], with the server-nonce check (§8) done here only when
/// `server_nonce` (a grant with nonces of its own checks them itself).
pub async fn check_nonce_by(
    state: &State,
    proof: &str,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    server_nonce: bool,
) -> Result<CheckedProof, Error> {
    let now = state.now();
    let expect = Expectations {
        htm,
        htu,
        now,
        iat_window: state.config.dpop_iat_window,
        access_token,
        nonces: server_nonce.then_some(&state.tokens.dpop_nonces),
    };
    let verified = dpop::verify_proof(proof, &expect).map_err(|e| match e {
        DpopError::UseNonce => OAuthError::use_dpop_nonce(state.tokens.dpop_nonces.current(now)),
        DpopError::Invalid(why) => OAuthError::invalid_dpop_proof(why),
    })?;
    let key = format!("dpop:{}:{}", verified.jkt, verified.jti);
    let spend = match state.tokens.replay.as_ref() {
        // `and_compute_with` runs calls on one key one after another;
        // `or_insert` does not promise a single fresh winner (moka #545).
        Replay::Memory { jtis: cache, .. } => Spend::done(matches!(
            cache
                .entry(key)
                .and_compute_with(|seen| async move {
                    if seen.is_some() { Op::Nop } else { Op::Put(()) }
                })
                .await,
            CompResult::Inserted(_)
        )),
        // Seen on this node already: a replay, no round trip needed.
        Replay::Database { seen, .. } if seen.contains_key(&key) => Spend::done(false),
        Replay::Database { batcher, seen } => {
            let until = spent_until(verified.iat, state.config.dpop_iat_window);
            let ticket = batcher.enqueue(key.clone(), until.at())?;
            let seen = seen.clone();
            Spend::pending(Box::pin(async move {
                let fresh = ticket.outcome().await?;
                if fresh {
                    seen.insert(key, ()).await;
                }
                Ok(fresh)
            }))
        }
    };
    // A replay known at once fails at once.
    if matches!(spend.known(), Some(false)) {
        spend.confirm().await?;
    }
    Ok(CheckedProof { verified, spend })
}

/// RFC 9449 §11.1: how long a proof's spent `jti` is kept. A proof is
/// accepted while its `iat` is within `iat_window` of `now` either way
/// (§4.3 check 11), so the last second it is accepted is `iat +
/// iat_window`: that is its expiry, with no further leeway.
pub fn spent_until(iat: i64, iat_window: i64) -> SpentUntil {
    SpentUntil::new(iat.saturating_add(iat_window), 0)
}

/// The `DPoP-Nonce` to send with a successful response, when nonces are on.
pub fn fresh_nonce(state: &State) -> Option<String> {
    state
        .config
        .dpop_nonce
        .then(|| state.tokens.dpop_nonces.current(state.now()))
}
