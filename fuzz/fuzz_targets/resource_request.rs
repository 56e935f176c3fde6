//! What a resource server receives: an `Authorization` header (Bearer or
//! DPoP; access tokens and agent passports) and a `DPoP` proof, verified
//! by the kit against a fixed key.
#![no_main]

use agentauth_fuzz::{ISSUER, NOW, fields, fixed_key};
use agentauth_resource::{ResourceVerifier, StaticKeys, VerifyingKey};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [authorization, dpop] = fields::<2>(data);
    let mut keys = StaticKeys::default();
    keys.insert(
        "k1",
        VerifyingKey {
            alg: Algorithm::ES256,
            key: DecodingKey::from_ec_der(&fixed_key().public),
        },
    );
    // Half the runs at a resource that accepts passports, so that their
    // path is fuzzed too.
    let verifier = ResourceVerifier::new(ISSUER, "https://mcp.example.com/mcp", keys)
        .without_token_cache()
        .accept_passports(data.get(1).is_some_and(|b| b % 2 == 0));
    let mut headers = HeaderMap::new();
    let (Ok(authorization), Ok(dpop)) = (
        HeaderValue::from_bytes(authorization),
        HeaderValue::from_bytes(dpop),
    ) else {
        return;
    };
    headers.insert(http::header::AUTHORIZATION, authorization);
    if !data.is_empty() && data[0] % 2 == 0 {
        headers.insert("dpop", dpop);
    }
    let _ = verifier.verify_request("POST", "https://mcp.example.com/mcp", &headers, NOW);
});
