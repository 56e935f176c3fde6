//! Proof-of-work stamps of open registration (`PoW-Stamp:
//! <challenge>:<nonce>`): as sent, and with a challenge payload from the
//! input sealed under the server's key, so that the challenge's JSON and
//! the proof check behind the MAC are reached too.
#![no_main]

use agentauth::crypto::sha256;
use agentauth::agents::stamps::{seal, verify};
use agentauth_fuzz::{NOW, fields};
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let [stamp, body, payload] = fields::<3>(data);
    let body_hash = sha256(body);
    if let Ok(stamp) = std::str::from_utf8(stamp) {
        let _ = verify(&SECRET, Some(stamp), &body_hash, NOW);
        if let Ok(payload) = std::str::from_utf8(payload) {
            let sealed = format!("{}:{stamp}", seal(&SECRET, payload));
            let _ = verify(&SECRET, Some(&sealed), &body_hash, NOW);
        }
    }
});
