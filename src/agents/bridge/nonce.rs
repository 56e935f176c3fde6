//! Server nonces for bridge-certificate proofs of possession
//! (SECURITY.md, "Bridge certificates"): `base64url(exp ‖ random ‖ MAC)`, made by any node
//! and checked by any (the MAC key is derived from the shared KEK), and
//! spent once through the replay table, so a proof of possession cannot
//! be replayed and a nonce cannot be reused.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{RandomError, random_bytes};
use crate::oauth::single_use::SpentUntil;

/// How long a nonce may be used.
pub const TTL: i64 = 120;
/// Clock skew allowed past a nonce's expiry: none (our own clock made it).
pub const EXP_LEEWAY: i64 = 0;

const LABEL: &[u8] = b"agentauth bridge nonce v1\0";

pub struct NonceMint {
    key: hmac::Key,
}

impl NonceMint {
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn tag(&self, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(LABEL);
        ctx.update(body);
        ctx.sign()
    }

    /// A fresh nonce, valid for [`TTL`] seconds from `now`.
    pub fn issue(&self, now: i64) -> Result<String, RandomError> {
        let mut body = Vec::with_capacity(40);
        body.extend_from_slice(&(now + TTL).to_be_bytes());
        body.extend_from_slice(&random_bytes::<16>()?);
        let tag = self.tag(&body);
        body.extend_from_slice(&tag.as_ref()[..16]);
        Ok(URL_SAFE_NO_PAD.encode(body))
    }

    /// Until when the nonce, when it is ours and not expired, must be
    /// kept once spent. Spending it is the caller's
    /// ([`crate::state::State::spend_once`]).
    pub fn check(&self, nonce: &str, now: i64) -> Option<SpentUntil> {
        if nonce.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let (body, mac) = bytes.split_at_checked(24)?;
        if mac.len() != 16 {
            return None;
        }
        let expected = self.tag(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected.as_ref()[..16], mac)) {
            return None;
        }
        let exp = i64::from_be_bytes(body[..8].try_into().ok()?);
        (exp > now.saturating_sub(EXP_LEEWAY) && exp <= now.saturating_add(TTL))
            .then(|| SpentUntil::new(exp, EXP_LEEWAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_verify_expire_and_resist_tampering() -> Result<(), RandomError> {
        let mint = NonceMint::new(&[7; 32]);
        let nonce = mint.issue(1000)?;
        assert_eq!(
            mint.check(&nonce, 1000),
            Some(SpentUntil::new(1000 + TTL, 0))
        );
        assert_eq!(mint.check(&nonce, 1000 + TTL), None);
        assert_eq!(NonceMint::new(&[8; 32]).check(&nonce, 1000), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&nonce).unwrap_or_default();
        bytes[0] ^= 1;
        assert_eq!(mint.check(&URL_SAFE_NO_PAD.encode(&bytes), 1000), None);
        assert_eq!(mint.check("", 1000), None);
        assert_eq!(mint.check("!!", 1000), None);
        Ok(())
    }
}
