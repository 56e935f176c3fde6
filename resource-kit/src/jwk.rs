//! Public JWKs (RFC 7517): which keys we accept from clients and agents,
//! and the RFC 7638 thumbprint that binds a token to one of them.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};

/// Members that only a private or symmetric key has (RFC 7518 §6).
pub const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

/// A public key of a type we verify with: RSA, EC P-256, or OKP Ed25519.
/// Symmetric keys and other curves are refused.
pub fn check_public_jwk(jwk: &Jwk) -> Result<(), &'static str> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(()),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(()),
            _ => Err("only the P-256 curve is supported for EC keys"),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Ok(()),
            _ => Err("only Ed25519 is supported for OKP keys"),
        },
        AlgorithmParameters::OctetKey(_) => Err("symmetric keys are not allowed"),
        _ => Err("unsupported key type"),
    }
}

/// True when a JWK, as JSON, carries private-key members (checked on the
/// raw JSON, before a parser could drop them).
pub fn has_private_members(jwk: &serde_json::Value) -> bool {
    PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some())
}

/// RFC 7638 SHA-256 thumbprint, base64url: the `jkt` of RFC 9449 §6.
pub fn thumbprint(jwk: &Jwk) -> Result<String, &'static str> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| "the JWK is malformed")
}
