//! RFC 7523 §3 JWT client assertions (`private_key_jwt`, OpenID Connect
//! Core §9).

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::client_metadata::CLIENT_ASSERTION_ALGS;
use super::single_use::SpentUntil;
use agentauth_resource::claims::Audience;

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest accepted assertion lifetime from now (the assertion is for one
/// request; a long-lived one is a replayable credential).
const MAX_LIFETIME: i64 = 600;
/// Allowed clock skew for `iat` and `nbf`.
const SKEW: i64 = 30;
/// Allowed clock skew past `exp`: none (the client made the assertion for
/// this request and chose its `exp`).
pub const EXP_LEEWAY: i64 = 0;

#[derive(Debug, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
}

impl AssertionClaims {
    /// RFC 7523 §3 item 7: how long the spent `jti` is kept, from the same
    /// `exp` and leeway [`verify`] accepts it with.
    pub fn spent_until(&self) -> SpentUntil {
        SpentUntil::new(self.exp, EXP_LEEWAY)
    }
}

/// The `iss` of an assertion, read before its signature is checked, only
/// to find which client's keys to check it with.
pub fn unverified_issuer(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode::<Iss>(assertion)
        .ok()
        .map(|d| d.claims.iss)
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn alg_name(alg: Algorithm) -> Option<&'static str> {
    CLIENT_ASSERTION_ALGS
        .iter()
        .copied()
        .find(|n| algorithm(n) == Some(alg))
}

/// RFC 7523 §3 checks, in order: algorithm allowed (and equal to the
/// registered one, and to the key's own `alg` when it names one);
/// signature by one of the client's keys; `iss` = `sub` = client_id; `aud`
/// is the issuer or the token endpoint (a list only of those);
/// `exp` in the future and not too far; `nbf`/`iat` not in the
/// future. The caller then spends `jti` once.
pub fn verify(
    assertion: &str,
    client_id: &str,
    keys: &JwkSet,
    audiences: &[&str],
    registered_alg: Option<&str>,
    now: i64,
) -> Result<AssertionClaims, &'static str> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| "client assertion is not a valid JWT")?;
    let name = alg_name(header.alg).ok_or("client assertion algorithm is not allowed")?;
    if registered_alg.is_some_and(|r| r != name) {
        return Err("client assertion algorithm differs from the registered one");
    }
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|ka| ka.to_string() == name)
        })
        .collect();
    if candidates.is_empty() {
        return Err("no registered key matches the client assertion");
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = candidates
        .iter()
        .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
        .find_map(|key| jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).ok())
        .ok_or("client assertion signature or claims are invalid")?
        .claims;
    if claims.iss != client_id || claims.sub != client_id {
        return Err("client assertion iss and sub must both be the client_id");
    }
    // RFC 7523 §3 (3): the authorization server, by its issuer or its
    // token endpoint URL; a list must name nothing else (an audience that
    // also names another party would let that party replay it here).
    let accepted = |a: &str| audiences.contains(&a);
    let aud_ok = match &claims.aud {
        Audience::One(a) => accepted(a),
        Audience::Many(list) => !list.is_empty() && list.iter().all(|a| accepted(a)),
    };
    if !aud_ok {
        return Err("client assertion aud must be the issuer or the token endpoint URL");
    }
    if claims.exp <= now.saturating_sub(EXP_LEEWAY) {
        return Err("client assertion has expired");
    }
    if claims.exp > now + MAX_LIFETIME {
        return Err("client assertion lives too long");
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW)
        || claims.iat.is_some_and(|iat| iat > now + SKEW)
    {
        return Err("client assertion is not valid yet");
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err("client assertion needs a jti of at most 256 characters");
    }
    Ok(claims)
}
