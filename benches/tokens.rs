#![allow(clippy::expect_used)]

//! Access-token signing and verification per second.
//!
//! `sign/preparsed` is what the server does: an aws-lc-rs RSA key parsed
//! once. `sign/jsonwebtoken_encode` is `jsonwebtoken::encode` with the
//! same key, which re-parses the PKCS#8 key on every call.

use agentauth::keys::{SigningAlg, SigningKey, verify_jwt};
use agentauth_resource::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims, Audience};
use agentauth_resource::dpop::{Expectations, verify_proof};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://auth.example.com".into(),
        sub: "qP6iCgfgTnwMriUPXgIULQ".into(),
        aud: Audience::One("https://mcp.example.com/mcp".into()),
        client_id: "qP6iCgfgTnwMriUPXgIULQ".into(),
        scope: Some("read write".into()),
        jti: "kTm6kHR8Sc-nPSIFFqQ9_A".into(),
        iat: 1_800_000_000,
        exp: 1_800_000_900,
        nbf: None,
        cnf: None,
        act: None,
        may_act: None,
        agent_id: None,
        owner: None,
        status: None,
        authorization_details: None,
        extra: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let (key, pkcs8) = SigningKey::generate("bench", SigningAlg::Rs256).expect("key");
    let claims = claims();
    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));

    group.bench_function("sign/preparsed_aws_lc", |b| {
        b.iter(|| key.sign(ACCESS_TOKEN_TYP, &claims).expect("sign"))
    });

    // jsonwebtoken wants PKCS#1: for RSA-2048 the RSAPrivateKey sits in the
    // PKCS#8 OCTET STRING that starts at byte 22 (`04 82 len len`).
    assert_eq!(&pkcs8[22..24], &[0x04, 0x82], "PKCS#8 layout");
    let encoding = EncodingKey::from_rsa_der(&pkcs8[26..]);
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some(ACCESS_TOKEN_TYP.into());
    header.kid = Some("bench".into());
    group.bench_function("sign/jsonwebtoken_encode", |b| {
        b.iter(|| jsonwebtoken::encode(&header, &claims, &encoding).expect("encode"))
    });

    let token = key.sign(ACCESS_TOKEN_TYP, &claims).expect("sign");
    let decoding = key.verifying_key().expect("public key");
    group.bench_function("verify", |b| {
        b.iter(|| {
            verify_jwt::<AccessTokenClaims, _>(&token, ACCESS_TOKEN_TYP, |_| Some(&decoding))
                .expect("verify")
        })
    });
    group.finish();

    // RFC 9449 §4.3 proof verification (stateless part; the jti spend is a
    // moka insert on one node or a database insert on PostgreSQL).
    let mut group = c.benchmark_group("dpop");
    group.throughput(Throughput::Elements(1));
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let public = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": { "kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65]) },
    });
    let claims = serde_json::json!({ "jti": "j1", "htm": "POST", "htu": "https://auth.example.com/token", "iat": 1_800_000_000 });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let proof = format!(
        "{input}.{}",
        b64(pair.sign(&rng, input.as_bytes()).expect("sign").as_ref())
    );
    let expect = Expectations {
        htm: "POST",
        htu: "https://auth.example.com/token",
        now: 1_800_000_000,
        iat_window: 60,
        access_token: None,
        nonces: None,
    };
    group.bench_function("verify_proof_es256", |b| {
        b.iter(|| verify_proof(&proof, &expect).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
