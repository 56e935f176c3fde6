//! The WebAuthn relying party (WebAuthn Level 3 §7) for passkeys: the
//! options the browser is given and the verification of what it returns,
//! for registration (§7.1) and authentication (§7.2). Protocol only: no
//! HTTP, no storage; `http::passkeys` drives it.
//!
//! Written here rather than taken from `webauthn-rs`: 0.5 verifies with
//! OpenSSL (a second crypto library, and a C build dependency on every
//! developer's machine), 0.6 with RustCrypto's `rsa` crate, which this
//! server keeps out (RUSTSEC-2023-0071) along with ~100 crates of a second
//! crypto stack. The part a passkey needs is small: CBOR through
//! `ciborium`, every signature through aws-lc-rs, as everywhere else here.
//!
//! What is checked, by spec step:
//! - client data: `type`, `challenge` (constant time), `origin` equal to
//!   the issuer's origin, not `crossOrigin`, no `topOrigin`;
//! - authenticator data: `rpIdHash` = SHA-256 of the RP id, user present
//!   *and* verified (a passkey replaces the password, so it must be a
//!   second factor in itself), backup flags consistent, attested credential
//!   data on registration only, nothing trailing;
//! - the credential public key: ES256 (P-256), EdDSA (Ed25519) or RS256
//!   (≥ 2048 bits), parsed from COSE and checked to be a usable key;
//! - the assertion's signature over `authData ‖ SHA-256(clientDataJSON)`,
//!   and a signature counter that only moves forward when it is used.
//!
//! Attestation is `none` (§6.5.3): we ask for none, and a statement an
//! authenticator sends anyway is not evaluated, since no decision here
//! depends on the authenticator's make.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::crypto::sha256;

/// COSE algorithm identifiers (RFC 9053), in our order of preference.
pub const ES256: i64 = -7;
pub const EDDSA: i64 = -8;
pub const RS256: i64 = -257;

/// How long the browser may take over a ceremony, and how long its
/// challenge stays redeemable.
pub const CEREMONY_SECONDS: i64 = 300;

/// The longest credential id a browser may send (§5.8.3).
const MAX_CREDENTIAL_ID: usize = 1023;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// Why a ceremony's result was refused; said to the person as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WebAuthnError(pub &'static str);

type Result<T> = std::result::Result<T, WebAuthnError>;

fn fail<T>(why: &'static str) -> Result<T> {
    Err(WebAuthnError(why))
}

/// Who we are to the authenticator: the RP id is the issuer's host, the
/// origin the issuer's origin.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub id: String,
    pub origin: String,
    pub name: String,
}

impl RelyingParty {
    pub fn from_issuer(issuer: &str) -> Option<Self> {
        let url = url::Url::parse(issuer).ok()?;
        let id = url.host_str()?.to_string();
        Some(Self {
            origin: url.origin().ascii_serialization(),
            name: id.clone(),
            id,
        })
    }

    /// `PublicKeyCredentialCreationOptions` (§5.4) as the JSON that
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` takes: a
    /// discoverable credential with user verification, attestation none,
    /// excluding the credentials the account already has.
    pub fn creation_options(
        &self,
        challenge: &[u8],
        user_handle: &[u8],
        username: &str,
        exclude: &[Vec<u8>],
    ) -> serde_json::Value {
        let params: Vec<_> = [ES256, EDDSA, RS256]
            .iter()
            .map(|alg| json!({ "type": "public-key", "alg": alg }))
            .collect();
        json!({
            "rp": { "id": self.id, "name": self.name },
            "user": {
                "id": URL_SAFE_NO_PAD.encode(user_handle),
                "name": username,
                "displayName": username,
            },
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "pubKeyCredParams": params,
            "timeout": CEREMONY_SECONDS * 1000,
            "attestation": "none",
            "authenticatorSelection": {
                "residentKey": "required",
                "requireResidentKey": true,
                "userVerification": "required",
            },
            "excludeCredentials": descriptors(exclude),
        })
    }

    /// `PublicKeyCredentialRequestOptions` (§5.5): with no credentials
    /// named, the authenticator offers the passkeys it holds for us
    /// (discoverable credentials, no username typed).
    pub fn request_options(&self, challenge: &[u8], allow: &[Vec<u8>]) -> serde_json::Value {
        json!({
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "rpId": self.id,
            "timeout": CEREMONY_SECONDS * 1000,
            "userVerification": "required",
            "allowCredentials": descriptors(allow),
        })
    }
}

fn descriptors(ids: &[Vec<u8>]) -> Vec<serde_json::Value> {
    ids.iter()
        .map(|id| json!({ "type": "public-key", "id": URL_SAFE_NO_PAD.encode(id) }))
        .collect()
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(default, rename = "crossOrigin")]
    cross_origin: Option<bool>,
    #[serde(default, rename = "topOrigin")]
    top_origin: Option<String>,
}

/// §7.1 steps 5–10, §7.2 steps 9–14.
fn check_client_data(rp: &RelyingParty, raw: &[u8], kind: &str, challenge: &[u8]) -> Result<()> {
    let Ok(data) = serde_json::from_slice::<ClientData>(raw) else {
        return fail("clientDataJSON is not the client data a browser sends");
    };
    if data.kind != kind {
        return fail("clientDataJSON is for another ceremony");
    }
    let Ok(presented) = URL_SAFE_NO_PAD.decode(data.challenge.as_bytes()) else {
        return fail("the challenge in clientDataJSON is not base64url");
    };
    if !bool::from(presented.ct_eq(challenge)) {
        return fail("the challenge does not match the one this ceremony was given");
    }
    if data.origin != rp.origin {
        return fail("the ceremony ran on another origin");
    }
    if data.cross_origin == Some(true) || data.top_origin.is_some() {
        return fail("the ceremony ran in a cross-origin frame");
    }
    Ok(())
}

/// A credential public key that aws-lc-rs verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// The uncompressed SEC1 point.
    Es256(Vec<u8>),
    Ed25519(Vec<u8>),
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl PublicKey {
    /// Parses a COSE_Key (RFC 9052 §7, RFC 9053 §7) of one of the three
    /// algorithms we offer.
    pub fn from_cose(cose: &[u8]) -> Result<(i64, Self)> {
        let Ok(value) = ciborium::from_reader::<Value, _>(cose) else {
            return fail("the credential public key is not CBOR");
        };
        Self::from_value(&value)
    }

    fn from_value(value: &Value) -> Result<(i64, Self)> {
        let Some(map) = value.as_map() else {
            return fail("the credential public key is not a COSE key");
        };
        let get = |label: i64| {
            map.iter()
                .find(|(k, _)| {
                    k.as_integer()
                        .is_some_and(|i| i128::from(i) == i128::from(label))
                })
                .map(|(_, v)| v)
        };
        let int = |label: i64| {
            get(label)
                .and_then(Value::as_integer)
                .and_then(|i| i64::try_from(i).ok())
        };
        let bytes = |label: i64| get(label).and_then(Value::as_bytes).cloned();
        let key = match (int(1), int(3)) {
            (Some(2), Some(ES256)) => {
                let (Some(1), Some(x), Some(y)) = (int(-1), bytes(-2), bytes(-3)) else {
                    return fail("an ES256 key must be a P-256 point");
                };
                if x.len() != 32 || y.len() != 32 {
                    return fail("an ES256 key must be a P-256 point");
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (ES256, PublicKey::Es256(point))
            }
            (Some(1), Some(EDDSA)) => {
                let (Some(6), Some(x)) = (int(-1), bytes(-2)) else {
                    return fail("an EdDSA key must be an Ed25519 key");
                };
                if x.len() != 32 {
                    return fail("an EdDSA key must be an Ed25519 key");
                }
                (EDDSA, PublicKey::Ed25519(x))
            }
            (Some(3), Some(RS256)) => {
                let (Some(n), Some(e)) = (bytes(-1), bytes(-2)) else {
                    return fail("an RS256 key needs n and e");
                };
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !(2048..=8192).contains(&bits) || e.is_empty() || e.len() > 8 {
                    return fail("an RS256 key must have 2048 to 8192 bits");
                }
                (RS256, PublicKey::Rs256 { n, e })
            }
            _ => return fail("the credential uses an algorithm we did not offer"),
        };
        Ok(key)
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<()> {
        let ok = match self {
            PublicKey::Es256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            PublicKey::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            fail("the passkey's signature does not verify")
        }
    }

    /// Whether aws-lc-rs accepts the key at all (a P-256 point off the
    /// curve, say, is refused at registration, not at every sign-in).
    fn usable(&self) -> bool {
        match self {
            PublicKey::Es256(point) => {
                signature::ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point).is_ok()
            }
            PublicKey::Ed25519(x) => {
                signature::ParsedPublicKey::new(&signature::ED25519, x).is_ok()
            }
            PublicKey::Rs256 { .. } => true,
        }
    }
}

/// Authenticator data (§6.1), borrowed from the bytes it was read from.
struct AuthData {
    rp_id_hash: [u8; 32],
    flags: u8,
    sign_count: u32,
    /// Credential id and COSE key bytes, present on registration.
    attested: Option<(Vec<u8>, Vec<u8>)>,
}

fn parse_auth_data(bytes: &[u8]) -> Result<AuthData> {
    let Some((head, mut rest)) = bytes.split_at_checked(37) else {
        return fail("authenticator data is too short");
    };
    let mut rp_id_hash = [0u8; 32];
    rp_id_hash.copy_from_slice(&head[..32]);
    let flags = head[32];
    let sign_count = u32::from_be_bytes([head[33], head[34], head[35], head[36]]);
    let mut attested = None;
    if flags & FLAG_AT != 0 {
        // AAGUID (16), credential id length (2), credential id, COSE key.
        let Some((fixed, after)) = rest.split_at_checked(18) else {
            return fail("attested credential data is truncated");
        };
        let len = usize::from(u16::from_be_bytes([fixed[16], fixed[17]]));
        if len == 0 || len > MAX_CREDENTIAL_ID {
            return fail("the credential id has an impossible length");
        }
        let Some((id, after)) = after.split_at_checked(len) else {
            return fail("attested credential data is truncated");
        };
        let key_len = cbor_item_len(after)?;
        let (key, after) = after.split_at(key_len);
        attested = Some((id.to_vec(), key.to_vec()));
        rest = after;
    }
    if flags & FLAG_ED != 0 {
        let len = cbor_item_len(rest)?;
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return fail("authenticator data has trailing bytes");
    }
    Ok(AuthData {
        rp_id_hash,
        flags,
        sign_count,
        attested,
    })
}

/// How many bytes the one CBOR item at the start of `bytes` takes.
fn cbor_item_len(bytes: &[u8]) -> Result<usize> {
    let mut cursor = std::io::Cursor::new(bytes);
    if ciborium::from_reader::<Value, _>(&mut cursor).is_err() {
        return fail("authenticator data holds malformed CBOR");
    }
    usize::try_from(cursor.position()).or_else(|_| fail("authenticator data is too long"))
}

/// Checks shared by both ceremonies (§7.1 steps 13–17, §7.2 steps 15–18).
fn check_auth_data(rp: &RelyingParty, data: &AuthData) -> Result<()> {
    if !bool::from(data.rp_id_hash.ct_eq(&sha256(rp.id.as_bytes()))) {
        return fail("the passkey is for another site");
    }
    if data.flags & FLAG_UP == 0 {
        return fail("the authenticator did not see a person present");
    }
    if data.flags & FLAG_UV == 0 {
        return fail("the authenticator did not verify the person (PIN or biometrics)");
    }
    if data.flags & FLAG_BS != 0 && data.flags & FLAG_BE == 0 {
        return fail("the authenticator's backup flags contradict each other");
    }
    Ok(())
}

/// What a browser returns from `navigator.credentials.create()`.
pub struct Registration<'a> {
    pub client_data_json: &'a [u8],
    pub attestation_object: &'a [u8],
}

/// A verified new passkey, to store.
#[derive(Debug)]
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    /// The COSE_Key as the authenticator sent it.
    pub public_key: Vec<u8>,
    pub alg: i64,
    pub sign_count: u32,
    /// Synced (backup eligible), as most platform passkeys are.
    pub backup_eligible: bool,
}

/// §7.1: verifies a registration against the challenge it was given.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    reg: &Registration<'_>,
) -> Result<NewCredential> {
    check_client_data(rp, reg.client_data_json, "webauthn.create", challenge)?;
    let Ok(Value::Map(object)) = ciborium::from_reader::<Value, _>(reg.attestation_object) else {
        return fail("the attestation object is not a CBOR map");
    };
    let field = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
    };
    let (Some(Value::Text(fmt)), Some(Value::Bytes(auth_data)), Some(Value::Map(statement))) =
        (field("fmt"), field("authData"), field("attStmt"))
    else {
        return fail("the attestation object lacks fmt, authData or attStmt");
    };
    if fmt == "none" && !statement.is_empty() {
        return fail("a none attestation carries no statement");
    }
    let data = parse_auth_data(auth_data)?;
    check_auth_data(rp, &data)?;
    let Some((credential_id, public_key)) = data.attested else {
        return fail("the registration carries no credential");
    };
    let (alg, key) = PublicKey::from_cose(&public_key)?;
    if !key.usable() {
        return fail("the credential public key is not a valid key");
    }
    Ok(NewCredential {
        credential_id,
        public_key,
        alg,
        sign_count: data.sign_count,
        backup_eligible: data.flags & FLAG_BE != 0,
    })
}

/// What a browser returns from `navigator.credentials.get()`.
pub struct Assertion<'a> {
    pub client_data_json: &'a [u8],
    pub authenticator_data: &'a [u8],
    pub signature: &'a [u8],
}

/// §7.2: verifies an assertion by a stored credential (its COSE key and
/// last signature counter) and returns the new counter to store.
pub fn verify_assertion(
    rp: &RelyingParty,
    challenge: &[u8],
    public_key: &[u8],
    stored_count: u32,
    assertion: &Assertion<'_>,
) -> Result<u32> {
    check_client_data(rp, assertion.client_data_json, "webauthn.get", challenge)?;
    let data = parse_auth_data(assertion.authenticator_data)?;
    if data.attested.is_some() {
        return fail("an assertion carries no new credential");
    }
    check_auth_data(rp, &data)?;
    let (_, key) = PublicKey::from_cose(public_key)?;
    let mut signed = Vec::with_capacity(assertion.authenticator_data.len() + 32);
    signed.extend_from_slice(assertion.authenticator_data);
    signed.extend_from_slice(&sha256(assertion.client_data_json));
    key.verify(&signed, assertion.signature)?;
    // §7.2 step 22: a counter that does not move forward, on an
    // authenticator that keeps one, is a sign of a cloned authenticator.
    if (data.sign_count != 0 || stored_count != 0) && data.sign_count <= stored_count {
        return fail(
            "the passkey's signature counter went backwards: is the authenticator cloned?",
        );
    }
    Ok(data.sign_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn rp() -> RelyingParty {
        RelyingParty::from_issuer("https://auth.example.com").unwrap()
    }

    fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind, "challenge": URL_SAFE_NO_PAD.encode(challenge), "origin": origin,
            "crossOrigin": false,
        }))
        .unwrap()
    }

    fn cbor(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn int(i: i64) -> Value {
        Value::Integer(i.into())
    }

    /// A software authenticator: one P-256 or Ed25519 key.
    enum Authenticator {
        P256(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Authenticator {
        fn p256() -> Self {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            Self::P256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    pkcs8.as_ref(),
                )
                .unwrap(),
            )
        }
        fn ed() -> Self {
            Self::Ed(Ed25519KeyPair::generate().unwrap())
        }
        fn cose(&self) -> Vec<u8> {
            match self {
                Self::P256(k) => {
                    let p = k.public_key().as_ref();
                    cbor(&Value::Map(vec![
                        (int(1), int(2)),
                        (int(3), int(ES256)),
                        (int(-1), int(1)),
                        (int(-2), Value::Bytes(p[1..33].to_vec())),
                        (int(-3), Value::Bytes(p[33..65].to_vec())),
                    ]))
                }
                Self::Ed(k) => cbor(&Value::Map(vec![
                    (int(1), int(1)),
                    (int(3), int(EDDSA)),
                    (int(-1), int(6)),
                    (int(-2), Value::Bytes(k.public_key().as_ref().to_vec())),
                ])),
            }
        }
        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match self {
                Self::P256(k) => k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
                Self::Ed(k) => k.sign(msg).as_ref().to_vec(),
            }
        }
    }

    fn auth_data(rp_id: &str, flags: u8, count: u32, attested: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut out = sha256(rp_id.as_bytes()).to_vec();
        out.push(flags | if attested.is_some() { FLAG_AT } else { 0 });
        out.extend_from_slice(&count.to_be_bytes());
        if let Some((id, key)) = attested {
            out.extend_from_slice(&[0u8; 16]);
            out.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
            out.extend_from_slice(id);
            out.extend_from_slice(key);
        }
        out
    }

    fn attestation(auth_data: Vec<u8>) -> Vec<u8> {
        cbor(&Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("attStmt".into()), Value::Map(vec![])),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]))
    }

    fn register(a: &Authenticator, challenge: &[u8]) -> Result<NewCredential> {
        let cd = client_data("webauthn.create", challenge, "https://auth.example.com");
        let ad = auth_data(
            "auth.example.com",
            FLAG_UP | FLAG_UV,
            0,
            Some((b"cred-1", &a.cose())),
        );
        verify_registration(
            &rp(),
            challenge,
            &Registration {
                client_data_json: &cd,
                attestation_object: &attestation(ad),
            },
        )
    }

    #[allow(clippy::too_many_arguments)] // one knob per field a test tampers with
    fn assert_with(
        a: &Authenticator,
        key: &[u8],
        stored: u32,
        count: u32,
        challenge: &[u8],
        origin: &str,
        rp_id: &str,
        flags: u8,
    ) -> Result<u32> {
        let cd = client_data("webauthn.get", challenge, origin);
        let ad = auth_data(rp_id, flags, count, None);
        let mut signed = ad.clone();
        signed.extend_from_slice(&sha256(&cd));
        let sig = a.sign(&signed);
        verify_assertion(
            &rp(),
            challenge,
            key,
            stored,
            &Assertion {
                client_data_json: &cd,
                authenticator_data: &ad,
                signature: &sig,
            },
        )
    }

    #[test]
    fn registers_and_signs_in_with_p256_and_ed25519() {
        for a in [Authenticator::p256(), Authenticator::ed()] {
            let cred = register(&a, b"challenge-one").unwrap();
            assert_eq!(cred.credential_id, b"cred-1");
            let ok = |count| {
                assert_with(
                    &a,
                    &cred.public_key,
                    0,
                    count,
                    b"c2",
                    "https://auth.example.com",
                    "auth.example.com",
                    FLAG_UP | FLAG_UV,
                )
            };
            assert_eq!(ok(0), Ok(0));
            assert_eq!(ok(5), Ok(5));
        }
    }

    #[test]
    fn refuses_what_a_phisher_or_a_clone_would_send() {
        let a = Authenticator::p256();
        let key = register(&a, b"c1").unwrap().public_key;
        let good = "https://auth.example.com";
        let uv = FLAG_UP | FLAG_UV;
        // Another origin, another RP id, no user verification.
        assert!(
            assert_with(
                &a,
                &key,
                0,
                1,
                b"c",
                "https://evil.example",
                "auth.example.com",
                uv
            )
            .is_err()
        );
        assert!(assert_with(&a, &key, 0, 1, b"c", good, "evil.example", uv).is_err());
        assert!(assert_with(&a, &key, 0, 1, b"c", good, "auth.example.com", FLAG_UP).is_err());
        // A counter that does not move forward.
        assert!(assert_with(&a, &key, 7, 7, b"c", good, "auth.example.com", uv).is_err());
        assert!(assert_with(&a, &key, 7, 3, b"c", good, "auth.example.com", uv).is_err());
        // Another key's signature.
        let other = register(&Authenticator::p256(), b"c1").unwrap().public_key;
        assert!(assert_with(&a, &other, 0, 1, b"c", good, "auth.example.com", uv).is_err());
    }

    #[test]
    fn refuses_a_registration_for_another_challenge_or_ceremony() {
        let a = Authenticator::ed();
        let cd = client_data("webauthn.create", b"theirs", "https://auth.example.com");
        let ad = auth_data(
            "auth.example.com",
            FLAG_UP | FLAG_UV,
            0,
            Some((b"id", &a.cose())),
        );
        let att = attestation(ad.clone());
        let reg = Registration {
            client_data_json: &cd,
            attestation_object: &att,
        };
        assert_eq!(
            verify_registration(&rp(), b"ours", &reg).unwrap_err().0,
            "the challenge does not match the one this ceremony was given"
        );
        let cd = client_data("webauthn.get", b"ours", "https://auth.example.com");
        let reg = Registration {
            client_data_json: &cd,
            attestation_object: &att,
        };
        assert!(verify_registration(&rp(), b"ours", &reg).is_err());
        // Trailing bytes after the key, and a truncated key.
        let cd = client_data("webauthn.create", b"ours", "https://auth.example.com");
        for bad in [[ad.clone(), vec![0]].concat(), ad[..ad.len() - 3].to_vec()] {
            let att = attestation(bad);
            let reg = Registration {
                client_data_json: &cd,
                attestation_object: &att,
            };
            assert!(verify_registration(&rp(), b"ours", &reg).is_err());
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let rp = rp();
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let reg = Registration {
                client_data_json: &junk,
                attestation_object: &junk,
            };
            assert!(verify_registration(&rp, b"c", &reg).is_err());
            assert!(parse_auth_data(&junk).is_err() || junk.len() >= 37);
            assert!(PublicKey::from_cose(&junk).is_err());
        }
    }

    #[test]
    fn rp_from_issuer() {
        let rp = RelyingParty::from_issuer("http://localhost:8080/").unwrap();
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origin, "http://localhost:8080");
    }
}
