//! Token-signing keys: generation, sealing at rest, rotation with a
//! publish-before-use window, and the in-memory key set every node signs
//! and verifies with.
//!
//! Signing uses aws-lc-rs directly with a key parsed once at load:
//! `jsonwebtoken::encode` re-parses the PKCS#8 key on every call, which
//! costs a measurable share of each signature (see `benches/tokens.rs`).
//! Verification goes through `jsonwebtoken` with the algorithm pinned;
//! access tokens it has verified are remembered per key set (see
//! [`KeyRing::verify_access_token`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::{Kek, b64url, random_id};
use crate::oauth::jwt::{ACCESS_TOKEN_TYP, AccessTokenClaims};
use crate::store::{self, StoreError};

/// The one algorithm our keys sign with. Pinned per key and stored with it.
pub const SIGNING_ALG: &str = "RS256";

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
}

/// A private key ready to sign, parsed once.
pub struct SigningKey {
    pub kid: String,
    pub activates_at: i64,
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// RFC 7515 compact serialization of `claims` with header
    /// `{"alg":"RS256","typ":typ,"kid":kid}`.
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
            alg: SIGNING_ALG,
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
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, jws.as_bytes(), &mut signature)
            .map_err(|_| KeyError::Sign)?;
        jws.push('.');
        jws.push_str(&b64url(&signature));
        Ok(jws)
    }
}

/// What one node holds in memory: keys that may sign, keys that verify,
/// and the JWKS document, pre-serialized.
pub struct KeySet {
    /// Sorted by `activates_at`; the newest already active one signs.
    signers: Vec<Arc<SigningKey>>,
    verifiers: HashMap<String, DecodingKey>,
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
    pub fn signer(&self, now: i64) -> Option<&Arc<SigningKey>> {
        self.signers.iter().rev().find(|k| k.activates_at <= now)
    }

    pub fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers.get(kid)
    }
}

/// Verification failures. Deliberately coarse: callers turn any of them
/// into "inactive" or `invalid_token`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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

/// The node's key ring. Reloaded from the database periodically so that a
/// key rotated by another process or node is picked up.
pub struct KeyRing {
    kek: Kek,
    set: RwLock<Arc<KeySet>>,
}

impl KeyRing {
    /// Loads the keys, generating the first one if there is none.
    pub async fn load_or_init(
        db: &DatabaseConnection,
        kek: Kek,
        now: i64,
    ) -> Result<Self, KeyError> {
        let mut rows = store::keys::list(db).await?;
        if !rows
            .iter()
            .any(|k| k.activates_at <= now && k.retire_after.is_none_or(|r| r > now))
        {
            let row = generate(&kek, now, now).await?;
            store::keys::insert(db, row.clone()).await?;
            tracing::info!(kid = %row.kid, "generated the first signing key");
            rows = store::keys::list(db).await?;
        }
        let set = build_set(&kek, &rows, now, None)?;
        Ok(Self {
            kek,
            set: RwLock::new(Arc::new(set)),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads keys from the database, reusing already parsed ones.
    pub async fn reload(&self, db: &DatabaseConnection, now: i64) -> Result<(), KeyError> {
        let rows = store::keys::list(db).await?;
        let old = self.current();
        let set = build_set(&self.kek, &rows, now, Some(&old))?;
        if set.signer(now).is_none() {
            return Err(KeyError::NoActiveKey);
        }
        match self.set.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Verifies a JWT we signed: known `kid`, pinned RS256, expected `typ`,
    /// valid signature. Time and issuer checks are the caller's (they own
    /// the clock); this only proves we issued the bytes.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, typ: &str) -> Result<T, VerifyError> {
        let set = self.current();
        verify_jwt(token, typ, |kid| set.verifier(kid))
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
                set.verifier(kid)
            })?);
        set.verified.insert(digest, claims.clone());
        Ok(claims)
    }
}

/// Verifies a JWT signed by one of our keys: known `kid`, pinned RS256,
/// expected `typ` (short or `application/` form), valid signature.
pub fn verify_jwt<T: DeserializeOwned, D: std::borrow::Borrow<DecodingKey>>(
    token: &str,
    typ: &str,
    key_for: impl FnOnce(&str) -> Option<D>,
) -> Result<T, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(VerifyError::Signature);
    }
    // RFC 8725 §3.11: explicit typing; `application/` may be omitted (RFC 7515 §4.1.9).
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
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, key.borrow(), &validation)
        .map(|d| d.claims)
        .map_err(|_| VerifyError::Signature)
}

impl SigningKey {
    /// Parses a PKCS#8 RSA private key.
    pub fn from_pkcs8(kid: &str, activates_at: i64, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::Open {
            kid: kid.to_string(),
            why: e.to_string(),
        })?;
        Ok(Self {
            kid: kid.to_string(),
            activates_at,
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh RSA-2048 key and its PKCS#8 encoding (benchmarks, tests).
    pub fn generate(kid: &str) -> Result<(Self, Vec<u8>), KeyError> {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        let pkcs8 = pair
            .as_der()
            .map_err(|_| KeyError::Generate)?
            .as_ref()
            .to_vec();
        Ok((Self::from_pkcs8(kid, 0, &pkcs8)?, pkcs8))
    }

    /// The public half, for verification.
    pub fn decoding_key(&self) -> DecodingKey {
        let (n, e) = rsa_components(&self.pair);
        DecodingKey::from_rsa_raw_components(&n, &e)
    }
}

/// Generates an RSA-2048 key and seals its PKCS#8 DER under the KEK.
/// Key generation runs on the blocking pool: it takes tens of milliseconds.
pub async fn generate(
    kek: &Kek,
    now: i64,
    activates_at: i64,
) -> Result<store::keys::KeyRow, KeyError> {
    let pair = tokio::task::spawn_blocking(|| aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048))
        .await
        .map_err(|_| KeyError::Generate)?
        .map_err(|_| KeyError::Generate)?;
    let pkcs8 = pair.as_der().map_err(|_| KeyError::Generate)?;
    let signing = RsaKeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
    let (n, e) = rsa_components(&signing);
    let kid = random_id();
    let public_jwk = serde_json::json!({
        "kty": "RSA",
        "use": "sig",
        "alg": SIGNING_ALG,
        "kid": kid,
        "n": b64url(&n),
        "e": b64url(&e),
    });
    Ok(store::keys::KeyRow {
        private_key_sealed: kek.seal(kid.as_bytes(), pkcs8.as_ref()),
        kid,
        alg: SIGNING_ALG.to_string(),
        public_jwk,
        created_at: now,
        activates_at,
        retire_after: None,
    })
}

fn rsa_components(pair: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::signature::RsaSubjectPublicKey;
    let public: &RsaSubjectPublicKey = pair.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    (n, e)
}

/// Publishes a new key that starts signing after `publish_delay` seconds,
/// and schedules the current keys to leave the JWKS once every token they
/// can have signed has expired.
pub async fn rotate(
    db: &DatabaseConnection,
    kek: &Kek,
    now: i64,
    publish_delay: i64,
    max_token_ttl: i64,
) -> Result<store::keys::KeyRow, KeyError> {
    let activates_at = now + publish_delay;
    let row = generate(kek, now, activates_at).await?;
    // A small margin covers clock skew between nodes.
    let retire_after = activates_at + max_token_ttl + 60;
    store::keys::insert_rotation(db, row.clone(), retire_after, now).await?;
    Ok(row)
}

fn build_set(
    kek: &Kek,
    rows: &[store::keys::KeyRow],
    now: i64,
    previous: Option<&KeySet>,
) -> Result<KeySet, KeyError> {
    let mut signers = Vec::new();
    let mut verifiers = HashMap::new();
    let mut jwks = Vec::new();
    let mut rows: Vec<&store::keys::KeyRow> = rows
        .iter()
        .filter(|r| r.alg == SIGNING_ALG && r.retire_after.is_none_or(|t| t > now))
        .collect();
    rows.sort_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)));
    for row in rows {
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
                let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| KeyError::Open {
                    kid: row.kid.clone(),
                    why: e.to_string(),
                })?;
                Arc::new(SigningKey {
                    kid: row.kid.clone(),
                    activates_at: row.activates_at,
                    pair,
                    rng: SystemRandom::new(),
                })
            }
        };
        let (n, e) = rsa_components(&signer.pair);
        verifiers.insert(
            row.kid.clone(),
            DecodingKey::from_rsa_raw_components(&n, &e),
        );
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
        verifiers,
        jwks_json,
        verified,
    })
}
