//! The resource-server side of our tokens: verify an access token and,
//! when it is DPoP-bound, its proof (RFC 9449 §7), and answer failures with
//! RFC 6750 / RFC 9449 `WWW-Authenticate` challenges.
//!
//! Keys come from any [`KeySource`]: a [`crate::StaticKeys`] read from a
//! JWKS, or the authorization server's own key ring.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use crate::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims};
use crate::dpop::{self, DPOP_ALGS, DpopError, Expectations, NonceKey};
use crate::jwt::{KeySource, verify_jwt};

/// Why a request was refused; each maps to one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceError {
    /// No credentials at all (RFC 6750 §3.1: no error code).
    MissingToken,
    InvalidRequest(&'static str),
    InvalidToken(&'static str),
    InvalidDpopProof(&'static str),
    UseDpopNonce(String),
}

/// Verifies requests for one resource (one `aud`).
pub struct ResourceVerifier<K> {
    pub issuer: String,
    pub audience: String,
    pub keys: K,
    pub iat_window: i64,
    pub nonces: Option<NonceKey>,
    /// (jkt, jti) of proofs seen within the window.
    replay: Cache<String, ()>,
}

impl<K: KeySource> ResourceVerifier<K> {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, keys: K) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys,
            iat_window: 60,
            nonces: None,
            replay: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(121))
                .build(),
        }
    }

    /// RFC 6750 §2.1 / RFC 9449 §7.1: the token from `Authorization`, then
    /// RFC 9068 §4 checks, then for bound tokens RFC 9449 §4.3 and §7.
    /// `url` is the resource URL as the client addressed it (from config,
    /// not the `Host` header).
    pub fn verify(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<AccessTokenClaims, ResourceError> {
        let mut auth = headers.get_all(header::AUTHORIZATION).iter();
        let value = auth.next().ok_or(ResourceError::MissingToken)?;
        if auth.next().is_some() {
            return Err(ResourceError::InvalidRequest(
                "more than one Authorization header",
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| ResourceError::InvalidRequest("malformed Authorization header"))?;
        let (scheme, token) = value.split_once(' ').ok_or(ResourceError::InvalidRequest(
            "malformed Authorization header",
        ))?;
        let token = token.trim();
        let dpop_scheme = scheme.eq_ignore_ascii_case("dpop");
        if !dpop_scheme && !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ResourceError::MissingToken);
        }

        let claims: AccessTokenClaims =
            verify_jwt(token, ACCESS_TOKEN_TYP, |kid| self.keys.key(kid))
                .map_err(|_| ResourceError::InvalidToken("the access token is invalid"))?;
        if claims.iss != self.issuer {
            return Err(ResourceError::InvalidToken(
                "the access token is from another issuer",
            ));
        }
        if !claims.aud.contains(&self.audience) {
            return Err(ResourceError::InvalidToken(
                "the access token is for another resource",
            ));
        }
        if claims.exp <= now || claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(ResourceError::InvalidToken("the access token has expired"));
        }

        let proofs: Vec<&HeaderValue> = headers.get_all("dpop").iter().collect();
        match (&claims.cnf, dpop_scheme) {
            // SECURITY-CASES 45: a bound token presented as a bearer token.
            (Some(_), false) => Err(ResourceError::InvalidToken(
                "a DPoP-bound token must use the DPoP scheme",
            )),
            (None, true) => Err(ResourceError::InvalidToken("the token is not DPoP-bound")),
            (None, false) => Ok(claims),
            (Some(cnf), true) => {
                let [proof] = proofs.as_slice() else {
                    return Err(ResourceError::InvalidDpopProof(
                        "exactly one DPoP proof is required",
                    ));
                };
                let proof = proof
                    .to_str()
                    .map_err(|_| ResourceError::InvalidDpopProof("DPoP header is not ASCII"))?;
                let expect = Expectations {
                    htm: method,
                    htu: url,
                    now,
                    iat_window: self.iat_window,
                    access_token: Some(token),
                    nonces: self.nonces.as_ref(),
                };
                let verified = dpop::verify_proof(proof, &expect).map_err(|e| match e {
                    DpopError::UseNonce => ResourceError::UseDpopNonce(
                        self.nonces
                            .as_ref()
                            .map(|n| n.current(now))
                            .unwrap_or_default(),
                    ),
                    DpopError::Invalid(why) => ResourceError::InvalidDpopProof(why),
                })?;
                // RFC 9449 §7.1: the proof key is the key the token is bound to.
                if verified.jkt != cnf.jkt {
                    return Err(ResourceError::InvalidDpopProof(
                        "the proof key is not the key the token is bound to",
                    ));
                }
                let key = format!("{}:{}", verified.jkt, verified.jti);
                // Serialized per key, so exactly one concurrent use wins
                // (`or_insert` makes no such promise, moka #545).
                let spent = self
                    .replay
                    .entry(key)
                    .and_compute_with(|seen| if seen.is_some() { Op::Nop } else { Op::Put(()) });
                if !matches!(spent, CompResult::Inserted(_)) {
                    return Err(ResourceError::InvalidDpopProof(
                        "DPoP proof jti was already used",
                    ));
                }
                Ok(claims)
            }
        }
    }
}

/// An HTTP status with the `WWW-Authenticate` challenges and the
/// `DPoP-Nonce` that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub status: StatusCode,
    pub www_authenticate: Vec<HeaderValue>,
    pub dpop_nonce: Option<HeaderValue>,
}

impl ResourceError {
    /// RFC 6750 §3 and RFC 9449 §7.1: a `DPoP` challenge (with `algs`)
    /// always, and a `Bearer` one for bearer failures.
    pub fn challenge(&self) -> Challenge {
        let algs = DPOP_ALGS.join(" ");
        let quote = |s: &str| s.replace(['"', '\\'], "'");
        let (status, challenges, nonce) = match &self {
            ResourceError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                vec![
                    format!(r#"DPoP algs="{algs}""#),
                    r#"Bearer realm="agentauth""#.to_string(),
                ],
                None,
            ),
            ResourceError::InvalidRequest(why) => (
                StatusCode::BAD_REQUEST,
                vec![format!(
                    r#"Bearer error="invalid_request", error_description="{}""#,
                    quote(why)
                )],
                None,
            ),
            ResourceError::InvalidToken(why) => (
                StatusCode::UNAUTHORIZED,
                vec![
                    format!(
                        r#"DPoP error="invalid_token", error_description="{}", algs="{algs}""#,
                        quote(why)
                    ),
                    format!(
                        r#"Bearer error="invalid_token", error_description="{}""#,
                        quote(why)
                    ),
                ],
                None,
            ),
            ResourceError::InvalidDpopProof(why) => (
                StatusCode::UNAUTHORIZED,
                vec![format!(
                    r#"DPoP error="invalid_dpop_proof", error_description="{}", algs="{algs}""#,
                    quote(why)
                )],
                None,
            ),
            ResourceError::UseDpopNonce(nonce) => (
                StatusCode::UNAUTHORIZED,
                vec![format!(
                    r#"DPoP error="use_dpop_nonce", error_description="a DPoP nonce is required", algs="{algs}""#
                )],
                Some(nonce.clone()),
            ),
        };
        Challenge {
            status,
            www_authenticate: challenges
                .iter()
                .filter_map(|c| HeaderValue::from_str(c).ok())
                .collect(),
            dpop_nonce: nonce.and_then(|n| HeaderValue::from_str(&n).ok()),
        }
    }

    /// The response headers of [`Self::challenge`], for any HTTP stack.
    pub fn headers(&self) -> (StatusCode, HeaderMap) {
        let challenge = self.challenge();
        let mut headers = HeaderMap::new();
        for v in challenge.www_authenticate {
            headers.append(header::WWW_AUTHENTICATE, v);
        }
        if let Some(v) = challenge.dpop_nonce {
            headers.insert("dpop-nonce", v);
        }
        (challenge.status, headers)
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ResourceError {
    fn into_response(self) -> axum::response::Response {
        self.headers().into_response()
    }
}
