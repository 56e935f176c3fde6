#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Bridge certificates (issue 16): what one issuance costs, step by step.
//!
//! - `csr_verify`: decode the base64url form value, parse the PKCS#10
//!   request and check its Ed25519 signature (the CSR path's parsing);
//! - `dpop_key`: the DPoP path's equivalent is the proof check the token
//!   endpoint runs anyway (see `benches/tokens.rs`, `dpop/verify`);
//! - `issue`: build and sign the certificate under the epoch CA (rcgen,
//!   Ed25519), the signing share;
//! - `chain_pem`: PEM-encode leaf and CA for the response.
//!
//! `cargo bench --bench bridge`

use agentauth::agents::bridge::ca::{self, EpochCa};
use agentauth::agents::bridge::cert::{self, Ed25519Public, Subject};
use agentauth::agents::bridge::csr;
use agentauth::crypto::Kek;
use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let kek = Kek::from_bytes(&[7; 32]).unwrap();
    let now = 1_800_000_000;
    let row = ca::generate(&kek, "auth.example.com", 1, now, 86_400).unwrap();
    let ca: EpochCa = ca::EpochCa::open_row(&kek, &row).unwrap();

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let nonce = "AAAAAGtJZ4B3nD0Xy0m2n9d6PqZ1sQ8Vb7hJ2wKcE5rT4uYiOpLa";
    let der = rcgen::CertificateParams::default()
        .serialize_request_with_attributes(&key, vec![csr::challenge_password(nonce).unwrap()])
        .unwrap()
        .der()
        .to_vec();
    let form_value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
    let public = Ed25519Public(key.public_key_raw().try_into().unwrap());
    let subject = Subject {
        issuer: "https://auth.example.com",
        agent_id: "agent-QUnM-blDxaT6P2Z_qLYs-g",
        owner_id: "cVaUeskIwfpVjjfSx4uB9A",
        scopes: vec!["read", "write"],
        code_signing: false,
    };

    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(1));
    g.bench_function("csr_verify", |b| {
        b.iter(|| csr::verify(&csr::decode(&form_value).unwrap()).unwrap())
    });
    g.bench_function("issue", |b| {
        b.iter(|| cert::issue(&ca, &public, &subject, now, 300).unwrap())
    });
    let issued = cert::issue(&ca, &public, &subject, now, 300).unwrap();
    g.bench_function("chain_pem", |b| {
        b.iter(|| {
            let mut chain = ca::pem(&issued.der);
            chain.push_str(&ca.certificate_pem);
            chain
        })
    });
    g.bench_function("jkt", |b| b.iter(|| public.jkt()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
