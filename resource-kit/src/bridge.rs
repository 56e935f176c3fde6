//! Verifying an agentauth bridge certificate (feature `bridge`), for a
//! service that receives one outside a TLS handshake (a signed artifact, a
//! certificate forwarded by a TLS-terminating proxy) or wants the agent's
//! identity out of one it accepted. SECURITY.md, "Bridge certificates":
//!
//! - it must chain to a CA of the bundle (`/.well-known/ca-bundle.pem`),
//!   signed with Ed25519: an unknown CA or another algorithm is refused;
//! - it must be valid now, with 30 s of clock skew either way, and live no
//!   longer than the authority's certificate lifetime (plus the 30 s it is
//!   backdated): a long-lived certificate is not a bridge certificate;
//! - its key must be Ed25519; malformed DER is an error, never a panic.
//!
//! What it certifies comes back as a [`BridgeIdentity`].

use base64::Engine as _;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Clock skew allowed either way.
pub const SKEW: i64 = 30;

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeCertError {
    #[error("the certificate is not well-formed DER")]
    Malformed,
    #[error("the certificate is not issued by a CA of the bundle")]
    UnknownCa,
    #[error("the certificate's signature is not a valid Ed25519 signature of its CA")]
    BadSignature,
    #[error("the certificate has expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate lives longer than a bridge certificate may")]
    TooLong,
    #[error("the certificate's key is not Ed25519")]
    NotEd25519,
    #[error("the certificate names no agent of this issuer")]
    NoAgent,
}

/// What a verified bridge certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeIdentity {
    /// `<issuer>/agents/<agent id>`.
    pub agent_uri: String,
    pub agent_id: String,
    pub owner: Option<String>,
    pub scopes: Vec<String>,
    /// The certified Ed25519 key.
    pub public_key: [u8; 32],
    pub not_after: i64,
    pub client_auth: bool,
    pub code_signing: bool,
    /// RFC 8705 §3.1 thumbprint: what a token's `cnf.x5t#S256` names.
    pub x5t_s256: String,
}

/// The DER certificates of a PEM bundle (or chain); blocks of other
/// kinds are skipped, and malformed PEM yields none.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, BridgeCertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(BridgeCertError::Malformed),
    }
}

fn ed25519_verify(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, key)
        .verify(message, signature)
        .is_ok()
}

/// Verifies `leaf` (DER) against the CAs of `bundle` (DER each) for
/// `issuer`, at `now`, for certificates of at most `lifetime` seconds
/// (the authority document's `certificate_lifetime`).
pub fn verify_bridge_certificate(
    leaf: &[u8],
    bundle: &[Vec<u8>],
    issuer: &str,
    lifetime: i64,
    now: i64,
) -> Result<BridgeIdentity, BridgeCertError> {
    let cert = parse(leaf)?;
    if cert.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(BridgeCertError::BadSignature);
    }
    // The issuing CA: same name, an Ed25519 CA certificate, valid now,
    // whose key made the signature.
    let mut named = false;
    let mut signed = false;
    for ca_der in bundle {
        let Ok(ca) = parse(ca_der) else { continue };
        if ca.subject() != cert.issuer() || !ca.is_ca() {
            continue;
        }
        named = true;
        let ca_key = &ca.public_key();
        if ca_key.algorithm.algorithm != OID_SIG_ED25519
            || ca.validity().not_after.timestamp() <= now - SKEW
        {
            continue;
        }
        if ed25519_verify(
            &ca_key.subject_public_key.data,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        ) {
            signed = true;
            break;
        }
    }
    if !named {
        return Err(BridgeCertError::UnknownCa);
    }
    if !signed {
        return Err(BridgeCertError::BadSignature);
    }
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    if not_after - not_before > lifetime + SKEW {
        return Err(BridgeCertError::TooLong);
    }
    if not_before > now + SKEW {
        return Err(BridgeCertError::NotYetValid);
    }
    if not_after <= now - SKEW {
        return Err(BridgeCertError::Expired);
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(BridgeCertError::NotEd25519);
    }
    let public_key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| BridgeCertError::NotEd25519)?;
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let prefix = format!("{issuer}/agents/");
    let agent_uri = uris
        .first()
        .filter(|u| u.starts_with(&prefix) && u.len() > prefix.len())
        .ok_or(BridgeCertError::NoAgent)?
        .clone();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let owner = uris
        .iter()
        .find_map(|u| u.strip_prefix("urn:agentauth:owner:"))
        .map(decode);
    let scopes = uris
        .iter()
        .filter_map(|u| u.strip_prefix("urn:agentauth:scope:"))
        .map(decode)
        .collect();
    let (client_auth, code_signing) = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map_or((false, false), |e| {
            (e.value.client_auth, e.value.code_signing)
        });
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
    Ok(BridgeIdentity {
        agent_id: agent_uri[prefix.len()..].to_string(),
        agent_uri,
        owner,
        scopes,
        public_key,
        not_after,
        client_auth,
        code_signing,
        x5t_s256: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()),
    })
}
