//! Fixtures shared by the fuzz targets.

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The issuer every target pretends to be.
pub const ISSUER: &str = "https://auth.example.com";
/// A fixed "now" (2027-01-15), so runs are reproducible.
pub const NOW: i64 = 1_800_000_000;

/// Splits fuzz input into `N` fields at NUL bytes (missing fields are
/// empty), so one byte string drives several arguments.
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}

/// One P-256 key for the whole run: its public JWK (kid `k1`, ES256) and
/// uncompressed public point.
pub struct FixedKey {
    pub jwk: serde_json::Value,
    pub public: Vec<u8>,
}

pub fn fixed_key() -> &'static FixedKey {
    static KEY: OnceLock<FixedKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = SystemRandom::new();
        let Ok(pkcs8) = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng) else {
            std::process::abort()
        };
        let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        else {
            std::process::abort()
        };
        let public = pair.public_key().as_ref().to_vec();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        FixedKey { jwk, public }
    })
}
