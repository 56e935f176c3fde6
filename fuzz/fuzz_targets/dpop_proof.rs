//! DPoP proofs (RFC 9449 §4.3) as the token endpoint and resource servers
//! check them, with and without an access token to bind (`ath`).
#![no_main]

use agentauth_fuzz::{ISSUER, NOW};
use agentauth_resource::dpop::{Expectations, verify_proof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let htu = format!("{ISSUER}/token");
    for access_token in [None, Some("an-access-token")] {
        let expect = Expectations {
            htm: "POST",
            htu: &htu,
            now: NOW,
            iat_window: 60,
            access_token,
            nonces: None,
        };
        let _ = verify_proof(proof, &expect);
    }
});
