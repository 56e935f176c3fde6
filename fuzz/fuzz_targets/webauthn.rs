//! WebAuthn responses (passkeys): registration (clientDataJSON and a CBOR
//! attestation object) and assertion (clientDataJSON, authenticator data,
//! signature) against a stored COSE key taken from the input.
#![no_main]

use agentauth::webauthn::{
    Assertion, Registration, RelyingParty, verify_assertion, verify_registration,
};
use agentauth_fuzz::{ISSUER, fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(rp) = RelyingParty::from_issuer(ISSUER) else {
        return;
    };
    let challenge = [7u8; 32];
    let [client_data_json, second, third, cose] = fields::<4>(data);
    let _ = verify_registration(
        &rp,
        &challenge,
        &Registration {
            client_data_json,
            attestation_object: second,
        },
    );
    let _ = verify_assertion(
        &rp,
        &challenge,
        cose,
        5,
        &Assertion {
            client_data_json,
            authenticator_data: second,
            signature: third,
        },
    );
});
