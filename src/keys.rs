//! Token-signing keys: generation, sealing at rest, rotation with a
//! publish-before-use window, and the in-memory key set every node signs
//! and verifies with.
//!
//! Keys sign with RS256 (the default), ES256 or EdDSA (`--signing-alg`).
//! The algorithm is stored with each key and pinned to it: verification
//! never reads it from the token. Keys of every algorithm are published in
//! the JWKS side by side; the newest active key of the configured algorithm
//! signs.
//!
//! Signing uses aws-lc-rs directly with a key parsed once at load:
//! `jsonwebtoken::encode` re-parses the PKCS#8 key on every call, which
//! costs a measurable share of each signature (see `benches/tokens.rs`).
//! Verification goes through the resource kit's [`verify_jwt`]; access
//! tokens it has verified are remembered per key set (see
//! [`KeyRing::verify_access_token`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agentauth_resource::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims};
use agentauth_resource::jwt::{KeySource, VerifyingKey};
pub use agentauth_resource::jwt::{VerifyError, verify_jwt};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::{Kek, b64url, random_id};
use crate::store::{self, Db, StoreError};

/// The JWS algorithms our keys sign with (RFC 7518 §3, RFC 8037).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA-2048 (what every client verifies).
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256: about ten times the signing rate of RS256.
    #[value(name = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037 `EdDSA`).
    #[value(name = "EdDSA")]
    EdDsa,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "RS256" => Self::Rs256,
            "ES256" => Self::Es256,
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }

    pub fn jws(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid} cannot be opened: {why}")]
    Open { kid: String, why: String },
    #[error("key generation failed")]
    Generate,
    #[error("signing failed")]
    Sign,
    #[error("no signing key is active")]
    NoActiveKey,
    #[error(transparent)]
    Random(#[from] crate::crypto::RandomError),
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key ready to sign, parsed once.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub activates_at: i64,
    pair: Pair,
    rng: SystemRandom,
}

impl SigningKey {
    /// RFC 7515 compact serialization of `claims` with header
    /// `{"alg":alg,"typ":typ,"kid":kid}`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        self.finish(self.signing_input(typ, claims)?)
    }

    /// The JWS signing input `BASE64URL(header).BASE64URL(payload)`, with room
    /// left for the signature.
    pub fn signing_input<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'a str,
            kid: &'a str,
        }
        let header = serde_json::to_vec(&Header {
            alg: self.alg.as_str(),
            typ,
            kid: &self.kid,
        })
        .map_err(|_| KeyError::Sign)?;
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        let mut jws = String::with_capacity(64 + payload.len() * 4 / 3 + 360);
        jws.push_str(&b64url(&header));
        jws.push('.');
        jws.push_str(&b64url(&payload));
        Ok(jws)
    }

    /// Signs a signing input and appends the signature: the private-key
    /// operation, and the only expensive step.
    pub fn finish(&self, mut jws: String) -> Result<String, KeyError> {
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, jws.as_bytes(), &mut signature)
                    .map_err(|_| KeyError::Sign)?;
                signature
            }
            // RFC 7518 §3.4: R ‖ S, 64 bytes (the FIXED encoding).
            Pair::Ec(pair) => pair
                .sign(&self.rng, jws.as_bytes())
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
            Pair::Ed(pair) => pair.sign(jws.as_bytes()).as_ref().to_vec(),
        };
        jws.push('.');
        jws.push_str(&b64url(&signature));
        Ok(jws)
    }

    /// Parses a PKCS#8 private key of `alg`.
    pub fn from_pkcs8(
        kid: &str,
        alg: SigningAlg,
        activates_at: i64,
        pkcs8: &[u8],
    ) -> Result<Self, KeyError> {
        let open = |why: String| KeyError::Open {
            kid: kid.to_string(),
            why,
        };
        let pair = match alg {
            SigningAlg::Rs256 => {
                Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| open(e.to_string()))?)
            }
            SigningAlg::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|e| open(e.to_string()))?,
            ),
            SigningAlg::EdDsa => {
                Pair::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| open(e.to_string()))?)
            }
        };
        Ok(Self {
            kid: kid.to_string(),
            alg,
            activates_at,
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh key and its PKCS#8 encoding. RSA generation takes tens of
    /// milliseconds: call it off the async executor.
    pub fn generate(kid: &str, alg: SigningAlg) -> Result<(Self, Vec<u8>), KeyError> {
        let pkcs8 = match alg {
            SigningAlg::Rs256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| KeyError::Generate)?
                .as_der()
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
            SigningAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|p| p.to_pkcs8v1())
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
            SigningAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|p| p.to_pkcs8())
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
        };
        Ok((Self::from_pkcs8(kid, alg, 0, &pkcs8)?, pkcs8))
    }

    /// The public half with its pinned algorithm, for verification.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let key = match &self.pair {
            Pair::Rsa(pair) => {
                let (n, e) = rsa_components(pair);
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
            Pair::Ec(pair) => {
                let (x, y) = ec_coordinates(pair)?;
                DecodingKey::from_ec_components(&b64url(x), &b64url(y))
                    .map_err(|_| KeyError::Generate)?
            }
            Pair::Ed(pair) => DecodingKey::from_ed_components(&b64url(pair.public_key().as_ref()))
                .map_err(|_| KeyError::Generate)?,
        };
        Ok(VerifyingKey {
            alg: self.alg.jws(),
            key,
        })
    }

    /// RFC 7517 public JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Result<serde_json::Value, KeyError> {
        let mut jwk = match &self.pair {
            Pair::Rsa(pair) => {
                let (n, e) = rsa_components(pair);
                serde_json::json!({ "kty": "RSA", "n": b64url(&n), "e": b64url(&e) })
            }
            Pair::Ec(pair) => {
                let (x, y) = ec_coordinates(pair)?;
                serde_json::json!({ "kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y) })
            }
            Pair::Ed(pair) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().as_ref()),
            }),
        };
        jwk["use"] = "sig".into();
        jwk["alg"] = self.alg.as_str().into();
        jwk["kid"] = self.kid.clone().into();
        Ok(jwk)
    }
}

fn rsa_components(pair: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::signature::RsaSubjectPublicKey;
    let public: &RsaSubjectPublicKey = pair.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    (n, e)
}

/// The affine coordinates of an uncompressed P-256 point `04 ‖ x ‖ y`.
fn ec_coordinates(pair: &EcdsaKeyPair) -> Result<(&[u8], &[u8]), KeyError> {
    match pair.public_key().as_ref() {
        [0x04, rest @ ..] if rest.len() == 64 => Ok(rest.split_at(32)),
        _ => Err(KeyError::Generate),
    }
}

/// What one node holds in memory: keys that may sign, keys that verify,
/// and the JWKS document, pre-serialized.
pub struct KeySet {
    /// Sorted by `activates_at`; the newest already active one signs.
    signers: Vec<Arc<SigningKey>>,
    /// The algorithm this node signs with.
    alg: SigningAlg,
    verifiers: HashMap<String, Arc<VerifyingKey>>,
    pub jwks_json: String,
    /// Access tokens whose signature one of these keys verified, by SHA-256
    /// of the token. Shared by a reloaded set with exactly the same keys;
    /// a set with other keys starts empty, so the tokens of a retired key
    /// stop verifying the moment it leaves the set.
    verified: VerifiedTokens,
}

type VerifiedTokens = moka::sync::Cache<[u8; 32], Arc<AccessTokenClaims>>;

/// Resource servers introspect the same token on every call they receive;
/// this many recent ones skip the RSA verification (about 0.5 KiB each).
const VERIFIED_TOKENS: u64 = 20_000;

impl KeySet {
    /// The newest active key of the configured algorithm. When the clock
    /// has stepped back before every such key's activation (an NTP
    /// correction just after start-up or a rotation), the earliest of
    /// them: it is published already, and failing every token request
    /// until the clock catches up would be worse.
    pub fn signer(&self, now: i64) -> Option<&Arc<SigningKey>> {
        let mut of_alg = self.signers.iter().filter(|k| k.alg == self.alg);
        self.signers
            .iter()
            .rev()
            .find(|k| k.alg == self.alg && k.activates_at <= now)
            .or_else(|| of_alg.next())
    }

    pub fn verifier(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.verifiers.get(kid)
    }
}

impl KeySource for KeyRing {
    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.current().verifier(kid).cloned()
    }
}

/// The node's key ring. Reloaded from the database periodically so that a
/// key rotated by another process or node is picked up.
pub struct KeyRing {
    kek: Kek,
    alg: SigningAlg,
    set: RwLock<Arc<KeySet>>,
    /// When a token with an unknown `kid` last made this node reload.
    unknown_kid_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// Least time between reloads caused by tokens with unknown `kid`s (so
/// that forged kids cannot make every request a database read).
const UNKNOWN_KID_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl KeyRing {
    /// Loads the keys, generating one of `alg` if none of that algorithm
    /// can sign. Keys of another algorithm (the operator switched
    /// `--signing-alg`) stay published until every token they signed has
    /// expired (`max_token_ttl`), then leave the JWKS.
    pub async fn load_or_init(
        db: &Db,
        kek: Kek,
        alg: SigningAlg,
        now: i64,
        max_token_ttl: i64,
    ) -> Result<Self, KeyError> {
        let mut rows = store::keys::list(db).await?;
        if !rows.iter().any(|k| {
            k.alg == alg.as_str() && k.activates_at <= now && k.retire_after.is_none_or(|r| r > now)
        }) {
            let row = generate(&kek, alg, now, now).await?;
            let others_retire = now + max_token_ttl + 60;
            store::keys::insert_first_of_alg(db, row.clone(), others_retire).await?;
            tracing::info!(kid = %row.kid, alg = %alg, "generated a signing key");
            rows = store::keys::list(db).await?;
        }
        let set = build_set(&kek, alg, &rows, now, None)?;
        Ok(Self {
            kek,
            alg,
            set: RwLock::new(Arc::new(set)),
            unknown_kid_reload: tokio::sync::Mutex::new(None),
        })
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A token named a `kid` this node does not know: another node may have
    /// made the key (two nodes starting on an empty database, a rotation
    /// within the reload interval). Reloads at most once a second, one
    /// caller at a time; `true` when the keys were reloaded since this
    /// caller asked (by it or by the caller it waited for), so it may
    /// verify once more. Callers that arrive during a reload wait for it
    /// rather than give up: a valid token from a new key must not read as
    /// inactive because another request got to the reload first.
    pub async fn reload_for_unknown_kid(&self, db: &Db, now: i64) -> bool {
        let asked = std::time::Instant::now();
        let mut last = self.unknown_kid_reload.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD_EVERY) {
            return false;
        }
        let reloaded = self.reload(db, now).await;
        // Stamped when the reload is done: everyone who asked before then
        // sees its keys.
        *last = Some(std::time::Instant::now());
        match reloaded {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "signing key reload for an unknown kid failed");
                false
            }
        }
    }

    /// Re-reads keys from the database, reusing already parsed ones.
    pub async fn reload(&self, db: &Db, now: i64) -> Result<(), KeyError> {
        let rows = store::keys::list(db).await?;
        let old = self.current();
        let set = build_set(&self.kek, self.alg, &rows, now, Some(&old))?;
        if set.signer(now).is_none() {
            return Err(KeyError::NoActiveKey);
        }
        match self.set.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Verifies a JWT we signed: known `kid`, its pinned `alg`, expected `typ`,
    /// valid signature. Time and issuer checks are the caller's (they own
    /// the clock); this only proves we issued the bytes.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, typ: &str) -> Result<T, VerifyError> {
        let set = self.current();
        verify_jwt(token, typ, |kid| set.verifier(kid).map(Arc::as_ref))
    }

    /// [`Self::verify`] for an access token (`typ` `at+jwt`), remembering
    /// tokens already verified by the current keys: a repeat costs a
    /// SHA-256 of the token instead of an RSA verification and a JSON parse.
    /// Only what the signature proves is remembered; expiry, revocation and
    /// the client's standing are the caller's to check on every call.
    pub fn verify_access_token(&self, token: &str) -> Result<Arc<AccessTokenClaims>, VerifyError> {
        let set = self.current();
        let digest = crate::crypto::sha256(token.as_bytes());
        if let Some(claims) = set.verified.get(&digest) {
            return Ok(claims);
        }
        let claims: Arc<AccessTokenClaims> =
            Arc::new(verify_jwt(token, ACCESS_TOKEN_TYP, |kid| {
                set.verifier(kid).map(Arc::as_ref)
            })?);
        set.verified.insert(digest, claims.clone());
        Ok(claims)
    }
}

/// Generates a key of `alg` and seals its PKCS#8 DER under the KEK. Key
/// generation runs on the blocking pool (RSA takes tens of milliseconds).
pub async fn generate(
    kek: &Kek,
    alg: SigningAlg,
    now: i64,
    activates_at: i64,
) -> Result<store::keys::KeyRow, KeyError> {
    let kid = random_id()?;
    let kid_for_key = kid.clone();
    let (key, pkcs8) = tokio::task::spawn_blocking(move || SigningKey::generate(&kid_for_key, alg))
        .await
        .map_err(|_| KeyError::Generate)??;
    Ok(store::keys::KeyRow {
        private_key_sealed: kek.seal(kid.as_bytes(), &pkcs8)?,
        public_jwk: key.public_jwk()?,
        kid,
        alg: alg.as_str().to_string(),
        created_at: now,
        activates_at,
        retire_after: None,
    })
}

/// Publishes a new key that starts signing after `publish_delay` seconds,
/// and schedules the current keys to leave the JWKS once every token they
/// can have signed has expired.
pub async fn rotate(
    db: &Db,
    kek: &Kek,
    alg: SigningAlg,
    now: i64,
    publish_delay: i64,
    max_token_ttl: i64,
) -> Result<store::keys::KeyRow, KeyError> {
    let activates_at = now + publish_delay;
    let row = generate(kek, alg, now, activates_at).await?;
    // A small margin covers clock skew between nodes.
    let retire_after = activates_at + max_token_ttl + 60;
    store::keys::insert_rotation(db, row.clone(), retire_after, now).await?;
    Ok(row)
}

fn build_set(
    kek: &Kek,
    alg: SigningAlg,
    rows: &[store::keys::KeyRow],
    now: i64,
    previous: Option<&KeySet>,
) -> Result<KeySet, KeyError> {
    let mut signers = Vec::new();
    let mut verifiers = HashMap::new();
    let mut jwks = Vec::new();
    let mut rows: Vec<(&store::keys::KeyRow, SigningAlg)> = rows
        .iter()
        .filter(|r| r.retire_after.is_none_or(|t| t > now))
        .filter_map(|r| match SigningAlg::parse(&r.alg) {
            Some(alg) => Some((r, alg)),
            None => {
                tracing::warn!(kid = %r.kid, alg = %r.alg, "signing key of an unknown algorithm skipped");
                None
            }
        })
        .collect();
    // Among keys active from the same second (a rotation with no publish
    // delay, in the second the current key began), the one not scheduled
    // to retire is the newer and must sign: it sorts last.
    let order = |r: &store::keys::KeyRow| (r.activates_at, r.retire_after.is_none(), r.created_at);
    rows.sort_by(|(a, _), (b, _)| (order(a), &a.kid).cmp(&(order(b), &b.kid)));
    for (row, row_alg) in rows {
        let reused = previous
            .and_then(|p| p.signers.iter().find(|k| k.kid == row.kid))
            .cloned();
        let signer = match reused {
            Some(k) => k,
            None => {
                let der = kek
                    .open(row.kid.as_bytes(), &row.private_key_sealed)
                    .map_err(|e| KeyError::Open {
                        kid: row.kid.clone(),
                        why: e.to_string(),
                    })?;
                Arc::new(SigningKey::from_pkcs8(
                    &row.kid,
                    row_alg,
                    row.activates_at,
                    &der,
                )?)
            }
        };
        let verifier = match previous.and_then(|p| p.verifiers.get(&row.kid)) {
            Some(v) => v.clone(),
            None => Arc::new(signer.verifying_key()?),
        };
        verifiers.insert(row.kid.clone(), verifier);
        jwks.push(row.public_jwk.clone());
        signers.push(signer);
    }
    let jwks_json = serde_json::json!({ "keys": jwks }).to_string();
    let verified = match previous {
        Some(p)
            if p.verifiers.len() == verifiers.len()
                && verifiers.keys().all(|kid| p.verifiers.contains_key(kid)) =>
        {
            p.verified.clone()
        }
        _ => moka::sync::Cache::builder()
            .max_capacity(VERIFIED_TOKENS)
            .time_to_idle(std::time::Duration::from_secs(300))
            .build(),
    };
    Ok(KeySet {
        signers,
        alg,
        verifiers,
        jwks_json,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock stepped back before the key's activation still signs with
    /// the earliest key, never with a successor published for later.
    #[test]
    fn a_clock_stepped_back_still_has_a_signer() -> Result<(), KeyError> {
        let kek = Kek::from_bytes(&[3; 32]).map_err(|_| KeyError::Generate)?;
        let row = |kid: &str, activates_at: i64| -> Result<store::keys::KeyRow, KeyError> {
            let (key, pkcs8) = SigningKey::generate(kid, SigningAlg::EdDsa)?;
            Ok(store::keys::KeyRow {
                kid: kid.into(),
                alg: "EdDSA".into(),
                private_key_sealed: kek.seal(kid.as_bytes(), &pkcs8)?,
                public_jwk: key.public_jwk()?,
                created_at: activates_at,
                activates_at,
                retire_after: None,
            })
        };
        let rows = [row("first", 1000)?, row("next", 2000)?];
        let set = build_set(&kek, SigningAlg::EdDsa, &rows, 990, None)?;
        assert_eq!(set.signer(990).map(|k| k.kid.as_str()), Some("first"));
        assert_eq!(set.signer(1500).map(|k| k.kid.as_str()), Some("first"));
        assert_eq!(set.signer(2000).map(|k| k.kid.as_str()), Some("next"));
        Ok(())
    }
}
