//! PKCS#10 certification requests (RFC 2986) as proofs of possession: the
//! request must name an Ed25519 key (RFC 8410), be signed by that key, and
//! carry the server nonce as its challengePassword attribute (PKCS#9
//! 1.2.840.113549.1.9.7), so the signature proves the key is held now.
//! Everything else in the request (subject, extensions) is ignored: the
//! server decides what the certificate says.

use base64::Engine as _;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::oid_registry::{OID_PKCS9_CHALLENGE_PASSWORD, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use super::BridgeError;

/// Largest request accepted (an Ed25519 CSR is about 200 bytes).
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// What a valid request proves.
#[derive(Debug, PartialEq, Eq)]
pub struct ProvenKey {
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
    /// The challengePassword: the server nonce the key signed.
    pub nonce: Option<String>,
}

fn bad(why: impl Into<String>) -> BridgeError {
    BridgeError::BadRequest(why.into())
}

/// The DER of a request given as PEM (`CERTIFICATE REQUEST`) or as
/// base64url / base64 DER.
pub fn decode(text: &str) -> Result<Vec<u8>, BridgeError> {
    let text = text.trim();
    if text.len() > MAX_CSR_BYTES * 2 {
        return Err(bad("csr is too large"));
    }
    let der = if text.starts_with("-----BEGIN") {
        // RFC 7468 §7; `NEW CERTIFICATE REQUEST` is what older tools write.
        match pem::parse(text) {
            Ok(p) if matches!(p.tag(), "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST") => {
                p.into_contents()
            }
            Ok(_) => return Err(bad("the PEM block is not a CERTIFICATE REQUEST")),
            Err(_) => return Err(bad("csr is malformed PEM")),
        }
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|_| bad("csr is neither PEM nor base64 DER"))?
    };
    if der.len() > MAX_CSR_BYTES {
        return Err(bad("csr is too large"));
    }
    Ok(der)
}

/// The challengePassword attribute (RFC 2985 §5.4.1, `SET { UTF8String }`)
/// carrying a server nonce, for a request built with rcgen; `None` for a
/// nonce too long to be ours.
pub fn challenge_password(nonce: &str) -> Option<rcgen::Attribute> {
    let len = u8::try_from(nonce.len()).ok().filter(|l| *l < 126)?;
    let mut values = vec![0x31, len + 2, 0x0c, len];
    values.extend_from_slice(nonce.as_bytes());
    Some(rcgen::Attribute {
        oid: &[1, 2, 840, 113549, 1, 9, 7],
        values,
    })
}

/// Parses and checks a DER request.
pub fn verify(der: &[u8]) -> Result<ProvenKey, BridgeError> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|_| bad("csr is not a DER PKCS#10 certification request"))?;
    if !rest.is_empty() {
        return Err(bad("csr has trailing bytes"));
    }
    let info = &csr.certification_request_info;
    // RFC 8410 §3: id-Ed25519, with absent parameters.
    if info.subject_pki.algorithm.algorithm != OID_SIG_ED25519
        || info.subject_pki.algorithm.parameters.is_some()
    {
        return Err(bad("the csr's key must be Ed25519"));
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(bad("the csr must be signed with Ed25519"));
    }
    let public_key: [u8; 32] = info
        .subject_pki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| bad("the csr's Ed25519 key is not 32 bytes"))?;
    csr.verify_signature()
        .map_err(|_| bad("the csr's signature is not made by the key it names"))?;
    let mut nonce = None;
    for attribute in info.iter_attributes() {
        if attribute.oid == OID_PKCS9_CHALLENGE_PASSWORD {
            match attribute.parsed_attribute() {
                ParsedCriAttribute::ChallengePassword(p) if nonce.is_none() => {
                    nonce = Some(p.0.clone());
                }
                _ => return Err(bad("the csr's challengePassword is malformed or repeated")),
            }
        }
    }
    Ok(ProvenKey { public_key, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request made by rcgen (as an agent would make one).
    fn request(alg: &'static rcgen::SignatureAlgorithm, nonce: Option<&str>) -> Vec<u8> {
        let Ok(key) = rcgen::KeyPair::generate_for(alg) else {
            panic!("keygen");
        };
        let params = rcgen::CertificateParams::default();
        let attrs = nonce.and_then(challenge_password).into_iter().collect();
        match params.serialize_request_with_attributes(&key, attrs) {
            Ok(csr) => csr.der().to_vec(),
            Err(e) => panic!("csr: {e}"),
        }
    }

    #[test]
    fn an_ed25519_request_with_a_nonce_verifies() -> Result<(), BridgeError> {
        let der = request(&rcgen::PKCS_ED25519, Some("n0nce"));
        let proven = verify(&der)?;
        assert_eq!(proven.nonce.as_deref(), Some("n0nce"));
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(decode(&pem)?, der);
        assert_eq!(
            decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der))?,
            der
        );
        Ok(())
    }

    #[test]
    fn other_keys_tampering_and_garbage_are_refused() {
        let p256 = request(&rcgen::PKCS_ECDSA_P256_SHA256, Some("n"));
        assert!(matches!(verify(&p256), Err(BridgeError::BadRequest(m)) if m.contains("Ed25519")));
        let mut der = request(&rcgen::PKCS_ED25519, Some("nonce-a"));
        // Change the nonce under the signature.
        if let Some(i) = der.windows(7).position(|w| w == b"nonce-a") {
            der[i + 6] = b'b';
        }
        assert!(matches!(verify(&der), Err(BridgeError::BadRequest(m)) if m.contains("signature")));
        assert!(verify(b"").is_err());
        assert!(verify(&[0x30, 0x82, 0xff, 0xff]).is_err());
        let mut trailing = request(&rcgen::PKCS_ED25519, None);
        trailing.push(0);
        assert!(verify(&trailing).is_err());
        assert!(decode("not base64 ***").is_err());
        let wrong_tag = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        assert!(
            matches!(decode(wrong_tag), Err(BridgeError::BadRequest(m)) if m.contains("not a CERTIFICATE REQUEST"))
        );
        let broken = "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n";
        assert!(
            matches!(decode(broken), Err(BridgeError::BadRequest(m)) if m.contains("malformed PEM"))
        );
    }
}
