//! The bridge certificate (RFC 5280 profile):
//!
//! - subject `CN=<agent id>`; subjectAltName URIs: `<issuer>/agents/<id>`
//!   (the identity, always first), `urn:agentauth:owner:<owner id>`, and
//!   `urn:agentauth:scope:<scope>` per scope (percent-encoded where a
//!   scope character is not allowed in a URI);
//! - keyUsage digitalSignature (critical); extendedKeyUsage clientAuth,
//!   plus codeSigning when asked; basicConstraints CA:FALSE;
//! - validity: from 30 s before issuance (verifiers' clock skew) to the
//!   configured lifetime after it, never past the CA's own;
//! - a random 128-bit serial; authority and subject key identifiers.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PKCS_ED25519, PublicKeyData, SanType, SignatureAlgorithm,
};

use super::BridgeError;
use super::ca::{EpochCa, serial};
use crate::crypto::{b64url, sha256};

/// Seconds a certificate is valid before its issuance.
pub const BACKDATE: i64 = 30;

/// A raw Ed25519 public key, as rcgen takes a subject key.
pub struct Ed25519Public(pub [u8; 32]);

impl PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl Ed25519Public {
    /// RFC 7638 thumbprint of the key as an OKP JWK (RFC 8037): the same
    /// value a DPoP proof made with it yields.
    pub fn jkt(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64url(&self.0)
        );
        b64url(&sha256(canonical.as_bytes()))
    }
}

/// What the certificate says about its holder.
pub struct Subject<'a> {
    pub issuer: &'a str,
    pub agent_id: &'a str,
    pub owner_id: &'a str,
    pub scopes: Vec<&'a str>,
    pub code_signing: bool,
}

/// An issued certificate.
pub struct Issued {
    pub der: Vec<u8>,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    /// RFC 8705 §3.1 `x5t#S256`.
    pub x5t_s256: String,
}

fn uri(text: String) -> Result<SanType, BridgeError> {
    Ok(SanType::URI(text.try_into().map_err(|_| {
        BridgeError::BadRequest("a name in the certificate is not ASCII".into())
    })?))
}

/// Characters of a scope token (RFC 6749 §3.3 NQCHAR) a URI cannot hold
/// as they are.
const NOT_URI: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'#')
    .add(b'[')
    .add(b']');

/// Signs a certificate for `key` under `ca`.
pub fn issue(
    ca: &EpochCa,
    key: &Ed25519Public,
    subject: &Subject<'_>,
    now: i64,
    ttl: i64,
) -> Result<Issued, BridgeError> {
    let internal = |e: rcgen::Error| BridgeError::Internal(e.to_string());
    let not_before = now - BACKDATE;
    let not_after = (now + ttl).min(ca.not_after);
    if not_after <= now {
        return Err(BridgeError::Internal("the CA has expired".into()));
    }
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, subject.agent_id);
    params.distinguished_name = name;
    let mut sans = vec![
        uri(format!("{}/agents/{}", subject.issuer, subject.agent_id))?,
        uri(format!("urn:agentauth:owner:{}", subject.owner_id))?,
    ];
    for scope in &subject.scopes {
        sans.push(uri(format!(
            "urn:agentauth:scope:{}",
            percent_encoding::utf8_percent_encode(scope, NOT_URI)
        ))?);
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if subject.code_signing {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::CodeSigning);
    }
    params.use_authority_key_identifier_extension = true;
    let (serial, serial_hex) = serial()?;
    params.serial_number = Some(serial);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before)
        .map_err(|_| BridgeError::Internal("time out of range".into()))?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)
        .map_err(|_| BridgeError::Internal("time out of range".into()))?;
    let cert = params.signed_by(key, &ca.issuer).map_err(internal)?;
    let der = cert.der().to_vec();
    Ok(Issued {
        x5t_s256: b64url(&sha256(&der)),
        der,
        serial_hex,
        not_before,
        not_after,
    })
}
