//! Redirect URIs: registration's validation, and the match of a requested
//! URI against a registered one (loopback ports included).
#![no_main]

use agentauth::oauth::client_metadata::{redirect_uri_matches, validate_redirect_uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [registered, requested] = agentauth_fuzz::fields::<2>(data);
    let (Ok(registered), Ok(requested)) = (
        std::str::from_utf8(registered),
        std::str::from_utf8(requested),
    ) else {
        return;
    };
    let _ = validate_redirect_uri(registered);
    let _ = redirect_uri_matches(registered, requested);
});
