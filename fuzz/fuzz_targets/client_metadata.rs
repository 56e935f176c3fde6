//! Client metadata: RFC 7591 registration requests and client ID metadata
//! documents, validated with the standard grant registry.
#![no_main]

use agentauth::grants::Registry;
use agentauth::oauth::cimd::parse_document;
use agentauth::oauth::client_metadata::{
    ClientMetadata, ClientMetadataRequest, RegistrationPolicy,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let registry = Registry::standard();
    let policy = RegistrationPolicy {
        scopes_supported: None,
        grants: &registry,
        insecure_fetch: false,
    };
    let _ = parse_document("https://app.example.com/client.json", data, &policy);
    if let Ok(request) = serde_json::from_slice::<ClientMetadataRequest>(data) {
        let _ = ClientMetadata::validate(request, &policy);
    }
});
