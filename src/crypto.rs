//! Small cryptographic helpers on aws-lc-rs: random tokens, SHA-256 hashes
//! of server-generated secrets, constant-time comparison, and AES-256-GCM
//! sealing of private keys at rest.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// The operating system's CSPRNG failed: no secret can be made, so the
/// request fails (500) rather than waiting or using anything weaker.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `n` random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RandomError)?;
    Ok(out)
}

/// A 256-bit random value, base64url without padding (43 characters).
/// Used for client secrets, registration access tokens, codes and refresh
/// tokens: high-entropy secrets for which a fast hash is the right store.
pub fn random_token() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A 128-bit random identifier, base64url (22 characters).
pub fn random_id() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<16>()?))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Compares a presented secret with a stored SHA-256 hash in constant time.
pub fn verify_secret(presented: &str, stored_hash: &[u8]) -> bool {
    let presented = sha256(presented.as_bytes());
    presented.as_slice().ct_eq(stored_hash).into()
}

/// The key-encryption key that seals signing keys at rest. Other
/// cluster-wide secrets (the DPoP nonce key) are derived from it, so every
/// node that shares the KEK agrees on them without more configuration.
pub struct Kek {
    aead: LessSafeKey,
    raw: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("the key-encryption key must be 32 bytes, base64-encoded")]
    BadLength,
    #[error("the sealed key could not be opened: wrong key-encryption key or corrupted data")]
    Open,
}

impl Kek {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KekError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KekError::BadLength)?;
        let raw: [u8; 32] = bytes.try_into().map_err(|_| KekError::BadLength)?;
        Ok(Self {
            aead: LessSafeKey::new(key),
            raw,
        })
    }

    /// A 256-bit key for `label`: HKDF-SHA256 (RFC 5869) with the KEK as
    /// input keying material and `label` as info, an independent key per
    /// purpose, never the KEK itself.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
        let mut out = [0u8; 32];
        let prk = Salt::new(HKDF_SHA256, b"agentauth kek").extract(&self.raw);
        let info = [label];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expansion
        // cannot fail, and a zero key is never used if it somehow did.
        let filled = prk
            .expand(&info, HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out));
        debug_assert!(filled.is_ok());
        out
    }

    pub fn from_base64(text: &str) -> Result<Self, KekError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim()))
            .map_err(|_| KekError::BadLength)?;
        Self::from_bytes(&bytes)
    }

    /// `nonce ‖ ciphertext ‖ tag`, with `aad` (e.g. the kid) authenticated.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RandomError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut in_out = plaintext.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Sealing only fails for inputs beyond AES-GCM's length limit (64 GiB).
        let sealed = self
            .aead
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut in_out);
        debug_assert!(sealed.is_ok());
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        if sealed.len() < NONCE_LEN {
            return Err(KekError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Open)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| KekError::Open)?;
        Ok(plain.to_vec())
    }
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_aad() {
        let kek = Kek::from_bytes(&random_bytes::<32>().unwrap()).unwrap();
        let sealed = kek.seal(b"kid-1", b"secret key").unwrap();
        assert_eq!(kek.open(b"kid-1", &sealed).unwrap(), b"secret key");
        assert!(kek.open(b"kid-2", &sealed).is_err());
        let other = Kek::from_bytes(&random_bytes::<32>().unwrap()).unwrap();
        assert!(other.open(b"kid-1", &sealed).is_err());
    }

    #[test]
    fn secrets_compare_by_hash() {
        let hash = sha256(b"s3cret");
        assert!(verify_secret("s3cret", &hash));
        assert!(!verify_secret("s3cres", &hash));
        assert!(!verify_secret("s3cret", &hash[..31]));
    }
}
