//! Bridge certificates as a verifying site reads them: PEM bundles, and a
//! leaf checked against a bundle.
#![no_main]

use agentauth_fuzz::{ISSUER, NOW, fields};
use agentauth_resource::bridge::{pem_certificates, verify_bridge_certificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [leaf, bundle] = fields::<2>(data);
    let bundle = match std::str::from_utf8(bundle) {
        Ok(pem) => pem_certificates(pem),
        Err(_) => vec![bundle.to_vec()],
    };
    let _ = verify_bridge_certificate(leaf, &bundle, ISSUER, 300, NOW);
});
