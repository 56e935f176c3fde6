//! Proof-of-work answers: a login request's challenge and the agent's
//! nonce, checked at any claimed difficulty.
#![no_main]

use agentauth::agents::login::{leading_zero_bits, solves};
use agentauth_fuzz::fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [challenge, nonce, difficulty] = fields::<3>(data);
    let _ = leading_zero_bits(challenge);
    let (Ok(challenge), Ok(nonce)) = (std::str::from_utf8(challenge), std::str::from_utf8(nonce))
    else {
        return;
    };
    let difficulty = difficulty.first().copied().map_or(0, u32::from);
    let _ = solves(challenge, nonce, difficulty);
});
