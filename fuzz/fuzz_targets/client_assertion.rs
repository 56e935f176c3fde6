//! Client assertions (RFC 7523, private_key_jwt): the unverified issuer
//! read for client lookup, then full verification against a fixed key set.
#![no_main]

use agentauth::oauth::client_assertion::{unverified_issuer, verify};
use agentauth_fuzz::{ISSUER, NOW, fixed_key};
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(assertion) = std::str::from_utf8(data) else {
        return;
    };
    let _ = unverified_issuer(assertion);
    let Ok(keys) =
        serde_json::from_value::<JwkSet>(serde_json::json!({ "keys": [fixed_key().jwk] }))
    else {
        return;
    };
    let token_endpoint = format!("{ISSUER}/token");
    let _ = verify(
        assertion,
        "client-1",
        &keys,
        &[ISSUER, &token_endpoint],
        None,
        NOW,
    );
    let _ = verify(assertion, "client-1", &keys, &[ISSUER], Some("ES256"), NOW);
});
