//! RFC 9449 DPoP: proof checking (§4.3), server nonces (§8), the JWK
//! thumbprint that binds tokens (§6, RFC 7638), and `ath` (§4.2).
//!
//! Pure protocol code: the replay store (a `jti` is spent once per
//! `(jkt, jti)`) and the HTTP shapes live with the callers: the
//! authorization server's token endpoint and [`crate::ResourceVerifier`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;

use crate::jwk::{check_public_jwk, has_private_members, thumbprint};
use crate::sha256;

/// RFC 9449 §4.2 `typ`.
pub const DPOP_TYP: &str = "dpop+jwt";

/// Asymmetric algorithms accepted for proofs (never `none` or a MAC).
/// `Ed25519` is the fully-specified name of RFC 9864 (what oauth4webapi
/// and other current clients send); `EdDSA` the older polymorphic one.
pub const DPOP_ALGS: [&str; 5] = ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"];

/// Why a proof failed. `UseNonce` is the §8 "retry with this nonce" case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("a fresh DPoP nonce is required")]
    UseNonce,
}

/// A proof that passed every stateless check. The caller spends `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof key, base64url.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The proof's public key (a bridge certificate may certify it).
    pub jwk: Jwk,
    /// The `nonce` claim, as sent (checked here only when
    /// [`Expectations::nonces`] is set).
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// What a proof must match.
pub struct Expectations<'a> {
    pub htm: &'a str,
    /// The endpoint URL, built from the configured issuer (never `Host`).
    pub htu: &'a str,
    pub now: i64,
    /// Accepted distance of `iat` from `now`, in seconds, either way.
    pub iat_window: i64,
    /// The access token presented with the proof, for `ath`.
    pub access_token: Option<&'a str>,
    /// When server nonces are on: the checker.
    pub nonces: Option<&'a NonceKey>,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "ES256" => Algorithm::ES256,
        "EdDSA" | "Ed25519" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        _ => return None,
    })
}

/// RFC 9449 §4.3 checks 2–12, in order. Check 1 (exactly one `DPoP`
/// header) belongs to the extractor.
pub fn verify_proof(proof: &str, expect: &Expectations<'_>) -> Result<VerifiedProof, DpopError> {
    use DpopError::Invalid;
    // §4.3 (2, 3): a well-formed JWS whose header we read ourselves, so that
    // private members of `jwk` are seen before any library drops them.
    let header_b64 = proof
        .split('.')
        .next()
        .ok_or(Invalid("DPoP proof is not a JWT"))?;
    if proof.split('.').count() != 3 {
        return Err(Invalid("DPoP proof is not a compact JWS"));
    }
    let raw: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Invalid("DPoP proof header is not JSON"))?;
    // §4.3 (4): typ.
    if raw.get("typ").and_then(|t| t.as_str()) != Some(DPOP_TYP) {
        return Err(Invalid("DPoP proof typ must be dpop+jwt"));
    }
    // §4.3 (5): an asymmetric algorithm we support.
    let alg_name = raw
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(Invalid("DPoP proof has no alg"))?;
    let alg = algorithm(alg_name).ok_or(Invalid("DPoP proof alg is not supported"))?;
    // §4.3 (7): the jwk is a public key.
    let jwk_value = raw.get("jwk").ok_or(Invalid("DPoP proof has no jwk"))?;
    if has_private_members(jwk_value) {
        return Err(Invalid("DPoP proof jwk must not contain a private key"));
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone())
        .map_err(|_| Invalid("DPoP proof jwk is malformed"))?;
    check_public_jwk(&jwk).map_err(Invalid)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| Invalid("DPoP proof jwk is malformed"))?;
    // §4.3 (6): the signature, with the header's alg pinned to the key type.
    let claims = if alg_name == "Ed25519" {
        // jsonwebtoken does not know the RFC 9864 name yet.
        verify_ed25519(proof, &jwk)?
    } else {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
            .map_err(|_| Invalid("DPoP proof signature or claims are invalid"))?
            .claims
    };
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(Invalid("DPoP proof jti must be 1 to 256 characters"));
    }
    // §4.3 (8): htm.
    if claims.htm != expect.htm {
        return Err(Invalid("DPoP proof htm does not match the request method"));
    }
    // §4.3 (9): htu, without query and fragment, after normalization.
    if !same_htu(&claims.htu, expect.htu) {
        return Err(Invalid("DPoP proof htu does not match the request URL"));
    }
    // §4.3 (10): nonce, when the server provides them.
    if let Some(nonces) = expect.nonces {
        match claims.nonce.as_deref() {
            Some(n) if nonces.is_valid(n, expect.now) => {}
            _ => return Err(DpopError::UseNonce),
        }
    }
    // §4.3 (11): iat within the window. `abs_diff` cannot overflow: a
    // signed proof may carry any i64 (`iat: i64::MIN` once panicked here;
    // SECURITY.md, Arithmetic and windows).
    if claims.iat.abs_diff(expect.now) > expect.iat_window.unsigned_abs() {
        return Err(Invalid("DPoP proof iat is outside the acceptable window"));
    }
    // §4.3 (12): ath, when an access token comes with the proof.
    if let Some(token) = expect.access_token
        && claims.ath.as_deref() != Some(ath(token).as_str())
    {
        return Err(Invalid("DPoP proof ath does not match the access token"));
    }
    let jkt = thumbprint(&jwk).map_err(|_| Invalid("DPoP proof jwk is malformed"))?;
    Ok(VerifiedProof {
        jkt,
        jti: claims.jti,
        iat: claims.iat,
        jwk,
        nonce: claims.nonce,
    })
}

/// A JWS with `alg: Ed25519` (RFC 9864 §2.2), verified with aws-lc-rs.
fn verify_ed25519(proof: &str, jwk: &Jwk) -> Result<ProofClaims, DpopError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let invalid = DpopError::Invalid("DPoP proof signature or claims are invalid");
    let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
        return Err(invalid);
    };
    if okp.curve != EllipticCurve::Ed25519 {
        return Err(invalid);
    }
    let public = URL_SAFE_NO_PAD
        .decode(&okp.x)
        .map_err(|_| invalid.clone())?;
    let (input, signature) = proof.rsplit_once('.').ok_or(invalid.clone())?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| invalid.clone())?;
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| invalid.clone())?;
    let payload = input.split('.').nth(1).ok_or(invalid.clone())?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid.clone())?;
    serde_json::from_slice(&payload).map_err(|_| invalid)
}

/// How long a spent proof must stay in a replay store (RFC 9449 §11.1):
/// until the last moment its `iat` is still accepted, `iat + iat_window`,
/// plus one second, counted from `now`. At most `2 * iat_window + 1`
/// (a proof dated `iat_window` ahead), never less than one second; a
/// store whose lifetime is fixed instead forgets proofs that a wider
/// window still accepts.
pub fn replay_retention(iat: i64, now: i64, iat_window: i64) -> std::time::Duration {
    let last = iat.saturating_add(iat_window.saturating_abs());
    let secs = last.saturating_sub(now).saturating_add(1).max(1);
    std::time::Duration::from_secs(secs.unsigned_abs())
}

/// RFC 9449 §4.2 `ath`: base64url(SHA-256(access token)).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(access_token.as_bytes()))
}

/// RFC 9449 §4.3 (9) with RFC 3986 §6 normalization: scheme and host
/// case-insensitive, default port implied; query and fragment ignored.
fn same_htu(claimed: &str, expected: &str) -> bool {
    let (Ok(a), Ok(b)) = (Url::parse(claimed), Url::parse(expected)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// Stateless server nonces (§8): `base64url(window ‖ HMAC(key, window)[..16])`,
/// valid in the window they were minted in and the one after. Every node
/// derives the same key from the shared KEK, so a nonce from one node is
/// accepted by all.
pub struct NonceKey {
    key: aws_lc_rs::hmac::Key,
    period: i64,
}

impl NonceKey {
    pub fn new(secret: &[u8; 32], period: i64) -> Self {
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
            period: period.max(1),
        }
    }

    fn mint_for(&self, window: i64) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, &window.to_be_bytes());
        let mut bytes = window.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tag.as_ref()[..16]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The nonce to hand out now.
    pub fn current(&self, now: i64) -> String {
        self.mint_for(now.div_euclid(self.period))
    }

    pub fn is_valid(&self, nonce: &str, now: i64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if bytes.len() != 24 {
            return false;
        }
        let mut window = [0u8; 8];
        window.copy_from_slice(&bytes[..8]);
        let window = i64::from_be_bytes(window);
        let current = now.div_euclid(self.period);
        if window != current && window != current - 1 {
            return false;
        }
        let tag = aws_lc_rs::hmac::sign(&self.key, &window.to_be_bytes());
        subtle::ConstantTimeEq::ct_eq(&tag.as_ref()[..16], &bytes[8..]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_retention_follows_the_window() {
        use std::time::Duration;
        // A proof dated now stays as long as the window; one dated a
        // window ahead, twice as long (+1 s).
        assert_eq!(replay_retention(1000, 1000, 60), Duration::from_secs(61));
        assert_eq!(replay_retention(1060, 1000, 60), Duration::from_secs(121));
        assert_eq!(replay_retention(1600, 1000, 600), Duration::from_secs(1201));
        // Never zero, never an overflow.
        assert_eq!(replay_retention(0, 1000, 60), Duration::from_secs(1));
        assert_eq!(
            replay_retention(i64::MIN, i64::MAX, i64::MIN),
            Duration::from_secs(1)
        );
        assert!(replay_retention(i64::MAX, i64::MIN, i64::MAX) > Duration::from_secs(1));
    }

    #[test]
    fn htu_normalization() {
        assert!(same_htu(
            "https://AS.example.com:443/token?x=1#f",
            "https://as.example.com/token"
        ));
        assert!(!same_htu(
            "https://as.example.com/token/",
            "https://as.example.com/token"
        ));
        assert!(!same_htu(
            "http://as.example.com/token",
            "https://as.example.com/token"
        ));
        assert!(!same_htu(
            "https://as.example.com:8443/token",
            "https://as.example.com/token"
        ));
    }

    #[test]
    fn nonces_rotate_and_expire() {
        let key = NonceKey::new(&[7u8; 32], 300);
        let n = key.current(1_000_000);
        assert!(key.is_valid(&n, 1_000_000));
        assert!(
            key.is_valid(&n, 1_000_000 + 300),
            "valid in the next window"
        );
        assert!(
            !key.is_valid(&n, 1_000_000 + 700),
            "stale after two windows"
        );
        assert!(
            !NonceKey::new(&[8u8; 32], 300).is_valid(&n, 1_000_000),
            "another key"
        );
        assert!(!key.is_valid("garbage", 1_000_000));
    }
}
