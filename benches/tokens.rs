//! Access-token signing and verification per second.
//!
//! `sign/preparsed` is what the server does: an aws-lc-rs RSA key parsed
//! once. `sign/jsonwebtoken_encode` is `jsonwebtoken::encode` with the
//! same key, which re-parses the PKCS#8 key on every call.

use agentauth::keys::{SigningKey, verify_jwt};
use agentauth::oauth::jwt::{ACCESS_TOKEN_TYP, AccessTokenClaims, Audience};
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
    }
}

fn bench(c: &mut Criterion) {
    let (key, pkcs8) = SigningKey::generate("bench").expect("key");
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
    let decoding = key.decoding_key();
    group.bench_function("verify", |b| {
        b.iter(|| {
            verify_jwt::<AccessTokenClaims>(&token, ACCESS_TOKEN_TYP, |_| Some(&decoding))
                .expect("verify")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
