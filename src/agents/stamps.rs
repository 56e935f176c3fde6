//! Proof-of-work stamps for open registration (`--registration pow`,
//! issue 15 item 4). `GET /register/challenge` hands out a challenge: a
//! MAC'd statement of its expiry and difficulty (nothing is stored until
//! it is spent). The client solves it for the exact body it will POST:
//! SHA-256(challenge ‖ base64url(SHA-256(body)) ‖ nonce) must have the
//! challenge's leading zero bits, and sends `PoW-Stamp: <challenge>:<nonce>`.
//! Each challenge is spent once, on any node (the replay table).

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::agents::Agents;
use crate::agents::login::{difficulty, leading_zero_bits};
use crate::crypto::sha256;
use crate::error::{Error, OAuthError};
use crate::oauth::single_use::SpentUntil;

/// How long a registration challenge may be answered.
pub const TTL: i64 = 300;
/// Clock skew allowed past a challenge's `exp`: none (our own clock made it).
const EXP_LEEWAY: i64 = 0;

#[derive(Serialize, Deserialize)]
struct Challenge {
    exp: i64,
    /// Leading zero bits.
    d: u32,
    n: String,
}

use crate::crypto::b64url as b64;

/// The MAC key and the domain-separated input for `payload`.
fn mac_input(secret: &[u8], payload: &str) -> (hmac::Key, Vec<u8>) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut input = b"agentauth register pow\0".to_vec();
    input.extend_from_slice(payload.as_bytes());
    (key, input)
}

/// A fresh challenge for a client at an address that asked for `recent`
/// challenges this minute: (challenge, difficulty).
pub fn issue(agents: &Agents, recent: u64, now: i64) -> Result<(String, u32), Error> {
    let d = difficulty(
        agents.config.pow_difficulty,
        recent,
        agents.config.pow_free_per_minute,
    );
    let payload = b64(&serde_json::to_vec(&Challenge {
        exp: now + TTL,
        d,
        n: crate::crypto::random_id()?,
    })
    .map_err(|e| Error::Internal(e.to_string()))?);
    Ok((seal(&agents.stamp_key, &payload), d))
}

/// `payload.tag`: the payload MAC'd under `secret` (a challenge as
/// handed out; public so the fuzzer can make well-sealed ones).
pub fn seal(secret: &[u8], payload: &str) -> String {
    let (key, input) = mac_input(secret, payload);
    let tag = hmac::sign(&key, &input);
    format!("{payload}.{}", b64(tag.as_ref()))
}

/// Checks a `PoW-Stamp` for `body` and spends its challenge.
pub async fn check(
    agents: &Agents,
    stamp: Option<&str>,
    body_hash: &[u8; 32],
    now: i64,
) -> Result<(), Error> {
    let (key, until) = verify(&agents.stamp_key, stamp, body_hash, now)?;
    if !agents.replay.spend_once(key, until).await? {
        return Err(OAuthError::invalid_request("the stamp's challenge was already used").into());
    }
    Ok(())
}

/// Everything [`check`] does but spending: the stamp is ours (MAC under
/// `secret`), unexpired, and solves its challenge for `body_hash`. Returns
/// the replay key to spend and until when. Pure, for the fuzzer.
pub fn verify(
    secret: &[u8],
    stamp: Option<&str>,
    body_hash: &[u8; 32],
    now: i64,
) -> Result<(String, SpentUntil), Error> {
    let bad = |why: &'static str| Error::from(OAuthError::invalid_request(why));
    let stamp = stamp.ok_or_else(|| {
        bad("open registration needs a proof-of-work stamp: GET /register/challenge, then PoW-Stamp: <challenge>:<nonce>")
    })?;
    let (challenge, nonce) = stamp
        .rsplit_once(':')
        .ok_or_else(|| bad("PoW-Stamp must be <challenge>:<nonce>"))?;
    if nonce.is_empty() || nonce.len() > 64 {
        return Err(bad("the stamp's nonce must be 1 to 64 characters"));
    }
    let (payload, tag) = challenge
        .split_once('.')
        .ok_or_else(|| bad("the stamp's challenge is malformed"))?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| bad("the stamp's challenge is malformed"))?;
    let (key, input) = mac_input(secret, payload);
    hmac::verify(&key, &input, &tag).map_err(|_| bad("the stamp's challenge is not ours"))?;
    let c: Challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| bad("the stamp's challenge is malformed"))?;
    if c.exp <= now.saturating_sub(EXP_LEEWAY) {
        return Err(bad("the stamp's challenge expired"));
    }
    let mut input = challenge.as_bytes().to_vec();
    input.extend_from_slice(b64(body_hash).as_bytes());
    input.extend_from_slice(nonce.as_bytes());
    if leading_zero_bits(&sha256(&input)) < c.d {
        return Err(OAuthError::invalid_request(format!(
            "the stamp does not solve its challenge for this body ({} leading zero bits needed)",
            c.d
        ))
        .into());
    }
    Ok((
        format!("regpow:{}", b64(&sha256(challenge.as_bytes()))),
        SpentUntil::new(c.exp, EXP_LEEWAY),
    ))
}
