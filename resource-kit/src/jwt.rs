//! Compact JWS verification with the algorithm pinned per key.
//!
//! RFC 8725 §3.1: the algorithm is a property of the key, never of the
//! token. A [`KeySource`] hands out a key together with the one algorithm it
//! verifies; a token whose header names another algorithm is refused before
//! any cryptography runs.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
pub struct VerifyingKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Where verification keys come from, by `kid`.
pub trait KeySource: Send + Sync {
    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>>;
}

/// Verification failures. Deliberately coarse: callers turn any of them
/// into "inactive" or `invalid_token`.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("wrong token type")]
    Type,
    #[error("unknown key")]
    UnknownKey,
    #[error("bad signature or claims")]
    Signature,
}

/// Verifies a JWT: known `kid`, the key's pinned `alg`, expected `typ`
/// (short or `application/` form, RFC 7515 §4.1.9; RFC 8725 §3.11), valid
/// signature. Numeric dates must be numbers (the claims type says so).
/// Time, issuer and audience checks are the caller's: it owns the clock.
pub fn verify_jwt<T: DeserializeOwned, K: std::borrow::Borrow<VerifyingKey>>(
    token: &str,
    typ: &str,
    key_for: impl FnOnce(&str) -> Option<K>,
) -> Result<T, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        let bare = match t.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        };
        bare.eq_ignore_ascii_case(typ)
    });
    if !typ_ok {
        return Err(VerifyError::Type);
    }
    let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
    let key = key_for(&kid).ok_or(VerifyError::UnknownKey)?;
    let key = key.borrow();
    if header.alg != key.alg {
        return Err(VerifyError::Signature);
    }
    let mut validation = Validation::new(key.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, &key.key, &validation)
        .map(|d| d.claims)
        .map_err(|_| VerifyError::Signature)
}

/// A fixed set of keys, e.g. a JWKS read once from a file or fetched by the
/// caller. Each key's algorithm is its JWK `alg`; without one, EC P-256
/// means ES256 and OKP Ed25519 means EdDSA, and an RSA key (RS256 or PS256?)
/// is skipped as ambiguous. Keys without `kid` are skipped.
#[derive(Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl StaticKeys {
    pub fn from_jwks(set: &JwkSet) -> Self {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if crate::jwk::check_public_jwk(jwk).is_err() {
                continue;
            }
            let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(a), _) => match Algorithm::try_from(a) {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                (None, AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
                _ => continue,
            };
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            keys.insert(kid, Arc::new(VerifyingKey { alg, key }));
        }
        Self { keys }
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).map(Arc::as_ref)
    }

    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(kid.into(), Arc::new(key));
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeySource for StaticKeys {
    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.get(kid).cloned()
    }
}

impl<K: KeySource + ?Sized> KeySource for Arc<K> {
    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        (**self).key(kid)
    }
}
