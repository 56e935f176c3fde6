//! Certificate signing requests of the bridge-certificate grant: PEM or
//! base64 decoding, then the Ed25519 proof-of-possession checks.
#![no_main]

use agentauth::agents::bridge::csr::{decode, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw DER straight to the checks, and text through the decoder.
    let _ = verify(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(der) = decode(text) {
            let _ = verify(&der);
        }
    }
});
