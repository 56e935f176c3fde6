#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What one request costs a resource server with the kit: the whole
//! `ResourceVerifier::verify` (header parsing, JWT signature with the
//! key's pinned alg, RFC 9068 checks) for a bearer token, for a
//! DPoP-bound token with a fresh proof (its ES256 signature, `ath`, the
//! replay cache insert), and for a passport with its proof. Each twice:
//! `first_sight` checks the token's signature (a verifier without the
//! token cache), `repeat` is the same token again (the cache of
//! signature-checked tokens answers; a DPoP proof is always checked).
//! Issue 14's target: at least 20,000 verifications per second per core.
//!
//! `status/…/off` and `status/…/on`: the same repeat verification of a
//! token that carries a `status` claim, without and with the status check
//! against a warm `StatusListCache` (issue 31's target: the check costs at
//! most 3 % of the throughput), and `status/check_only` the check alone.
//! The list comes once from a local server; as in the guard, the check is
//! `check_cached` (the warm path), falling back to the future of `check`.
//!
//! ```sh
//! cargo bench -p agentauth-resource --bench verify
//! ```
//!
//! Tokens are ES256 here (the resource's cost; the server's default RS256
//! verifies faster still: RSA verification is cheap, signing is not).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentauth_resource::ResourceVerifier;
use agentauth_resource::claims::PASSPORT_TYP;
use agentauth_resource::jwt::{StaticKeys, VerifyingKey};
use agentauth_resource::status::{StatusClaim, StatusList, StatusListRef};
use agentauth_resource::status_cache::{StatusListCache, StatusListPolicy};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://auth.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: i64 = 1_800_000_000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn es256() -> (Vec<u8>, EcdsaKeyPair) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    (pkcs8.as_ref().to_vec(), pair)
}

fn bench(c: &mut Criterion) {
    let (issuer_pkcs8, issuer_pair) = es256();
    let mut keys = StaticKeys::default();
    keys.insert(
        "k1",
        VerifyingKey {
            alg: Algorithm::ES256,
            key: DecodingKey::from_ec_der(issuer_pair.public_key().as_ref()),
        },
    );
    let encoding = EncodingKey::from_ec_der(&issuer_pkcs8);
    let sign = |typ: &str, claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
    };
    let base = json!({"iss": ISSUER, "sub": "user-1", "aud": RESOURCE, "client_id": "c1",
                      "scope": "tools:read", "jti": "j1", "iat": NOW, "exp": NOW + 900});
    let bearer = sign("at+jwt", base.clone());

    // A DPoP-bound token and its holder's key.
    let (_, holder) = es256();
    let public = holder.public_key().as_ref().to_vec();
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])});
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        b64(&public[1..33]),
        b64(&public[33..65])
    );
    let jkt = b64(digest(&SHA256, canonical.as_bytes()).as_ref());
    let mut bound_claims = base.clone();
    bound_claims["cnf"] = json!({"jkt": jkt});
    let bound = sign("at+jwt", bound_claims);
    let proof_header = b64(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk})
        .to_string()
        .as_bytes());
    let rng = SystemRandom::new();
    let mut serial = 0u64;
    let mut fresh_proof = |ath: &str| {
        serial += 1;
        let claims = json!({"jti": format!("p{serial}"), "htm": "POST", "htu": RESOURCE, "iat": NOW, "ath": ath});
        let input = format!("{proof_header}.{}", b64(claims.to_string().as_bytes()));
        let sig = holder.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    };

    let passport = sign(
        PASSPORT_TYP,
        json!({"iss": ISSUER, "sub": "agent-1", "agent_id": "agent-1", "owner": "user-1",
               "agent_name": "deployer", "cnf": {"jkt": jkt}, "aud": RESOURCE, "scope": "tools:read", "jti": "pp1", "iat": NOW, "exp": NOW + 3600}),
    );

    // Passports are refused unless a resource accepts them.
    let verifier = ResourceVerifier::new(ISSUER, RESOURCE, keys.clone()).accept_passports(true);
    let cold = ResourceVerifier::new(ISSUER, RESOURCE, keys.clone())
        .without_token_cache()
        .accept_passports(true);
    let mut group = c.benchmark_group("resource_kit");
    group.throughput(Throughput::Elements(1));

    // The server's default: RS256 (verification is the cheap half of RSA).
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa_public = {
        use aws_lc_rs::signature::RsaSubjectPublicKey;
        let public: &RsaSubjectPublicKey = rsa.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    };
    let mut rsa_keys = StaticKeys::default();
    rsa_keys.insert(
        "r1",
        VerifyingKey {
            alg: Algorithm::RS256,
            key: DecodingKey::from_rsa_raw_components(&rsa_public.0, &rsa_public.1),
        },
    );
    let rsa_token = {
        let header = b64(json!({"alg": "RS256", "typ": "at+jwt", "kid": "r1"})
            .to_string()
            .as_bytes());
        let input = format!("{header}.{}", b64(base.to_string().as_bytes()));
        let mut sig = vec![0u8; rsa.public_modulus_len()];
        rsa.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", b64(&sig))
    };
    let rsa_cold = ResourceVerifier::new(ISSUER, RESOURCE, rsa_keys.clone()).without_token_cache();
    let rsa_verifier = ResourceVerifier::new(ISSUER, RESOURCE, rsa_keys);
    let mut rsa_headers = HeaderMap::new();
    rsa_headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {rsa_token}")).unwrap(),
    );
    group.bench_function("verify/bearer_rs256/first_sight", |b| {
        b.iter(|| {
            rsa_cold
                .verify("POST", RESOURCE, &rsa_headers, NOW + 1)
                .unwrap()
        })
    });
    group.bench_function("verify/bearer_rs256/repeat", |b| {
        b.iter(|| {
            rsa_verifier
                .verify("POST", RESOURCE, &rsa_headers, NOW + 1)
                .unwrap()
        })
    });

    let mut bearer_headers = HeaderMap::new();
    bearer_headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap(),
    );
    for (name, v) in [("first_sight", &cold), ("repeat", &verifier)] {
        group.bench_function(format!("verify/bearer_es256/{name}"), |b| {
            b.iter(|| {
                v.verify("POST", RESOURCE, &bearer_headers, NOW + 1)
                    .unwrap()
            })
        });
    }

    for (token, kind) in [(&bound, "dpop_es256"), (&passport, "passport_es256")] {
        let ath = b64(digest(&SHA256, token.as_bytes()).as_ref());
        for (name, v) in [("first_sight", &cold), ("repeat", &verifier)] {
            group.bench_function(format!("verify/{kind}/{name}"), |b| {
                b.iter_batched(
                    || {
                        let mut h = HeaderMap::new();
                        h.insert(
                            header::AUTHORIZATION,
                            HeaderValue::from_str(&format!("DPoP {token}")).unwrap(),
                        );
                        h.insert("dpop", HeaderValue::from_str(&fresh_proof(&ath)).unwrap());
                        h
                    },
                    |h| v.verify("POST", RESOURCE, &h, NOW + 1).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }

    // The same with an Ed25519 proof key (EdDSA): the proof check is the
    // one signature a repeat pays, and Ed25519 verifies faster than P-256.
    let ed = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let ed_x = b64(ed.public_key().as_ref());
    let ed_jkt = b64(digest(
        &SHA256,
        format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{ed_x}"}}"#).as_bytes(),
    )
    .as_ref());
    let mut ed_claims = base.clone();
    ed_claims["cnf"] = json!({"jkt": ed_jkt});
    let ed_bound = sign("at+jwt", ed_claims);
    let ed_ath = b64(digest(&SHA256, ed_bound.as_bytes()).as_ref());
    let ed_header = b64(
        json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": ed_x}})
            .to_string()
            .as_bytes(),
    );
    let mut ed_serial = 0u64;
    group.bench_function("verify/dpop_eddsa_proof/repeat", |b| {
        b.iter_batched(
            || {
                ed_serial += 1;
                let claims = json!({"jti": format!("e{ed_serial}"), "htm": "POST", "htu": RESOURCE, "iat": NOW, "ath": ed_ath});
                let input = format!("{ed_header}.{}", b64(claims.to_string().as_bytes()));
                let proof = format!("{input}.{}", b64(ed.sign(input.as_bytes()).as_ref()));
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("DPoP {ed_bound}")).unwrap(),
                );
                h.insert("dpop", HeaderValue::from_str(&proof).unwrap());
                h
            },
            |h| verifier.verify("POST", RESOURCE, &h, NOW + 1).unwrap(),
            BatchSize::SmallInput,
        )
    });
    status_rows(&mut group, &keys, &sign, &mut fresh_proof, &jkt);
    group.finish();
}

/// The future of a check on a warm list, which never waits.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a warm status check waited"),
    }
}

fn status_rows(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    keys: &StaticKeys,
    sign: &dyn Fn(&str, serde_json::Value) -> String,
    fresh_proof: &mut dyn FnMut(&str) -> String,
    jkt: &str,
) {
    // The issuer's status list, served at its origin: 2^20 statuses, 1 %
    // of them revoked (not ours).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let uri = format!("{issuer}/statuslists/1");
    let mut list = StatusList::new(1, 1 << 20).unwrap();
    for i in (0..1 << 20).step_by(100) {
        list.set(i + 1, 1).unwrap();
    }
    let list_token = sign(
        "statuslist+jwt",
        json!({"iss": issuer, "sub": uri, "iat": NOW, "exp": NOW + 3600, "ttl": 3600,
               "status_list": list.to_json()}),
    );
    let app = axum::Router::new().route(
        "/statuslists/1",
        axum::routing::get(move || {
            let token = list_token.clone();
            async move { ([("content-type", "application/statuslist+jwt")], token) }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });

    let lists = StatusListCache::new(
        issuer.clone(),
        Arc::new(keys.clone()),
        StatusListPolicy {
            max_ttl: Duration::from_secs(3600),
            ..StatusListPolicy::default()
        },
    )
    .unwrap();
    let at = UNIX_EPOCH + Duration::from_secs((NOW + 1) as u64);
    let status = StatusClaim {
        status_list: StatusListRef {
            idx: 4242,
            uri: uri.clone(),
        },
    };
    runtime.block_on(lists.check(Some(&status), at)).unwrap();
    // What the guard does: the warm path, else the future of the fetch.
    let check = |claims: &agentauth_resource::AccessTokenClaims, at: SystemTime| {
        let status = claims.status.as_ref();
        match lists.check_cached(status, at) {
            Some(verdict) => verdict.unwrap(),
            None => ready(lists.check(status, at)).unwrap(),
        }
    };

    // The check alone, on claims already verified.
    let checked_claims: agentauth_resource::AccessTokenClaims = serde_json::from_value(
        json!({"iss": issuer, "sub": "u", "aud": RESOURCE, "client_id": "c", "jti": "j",
               "iat": NOW, "exp": NOW + 900, "status": status}),
    )
    .unwrap();
    group.bench_function("status/check_only", |b| {
        b.iter(|| check(std::hint::black_box(&checked_claims), at))
    });

    let verifier = ResourceVerifier::new(issuer.clone(), RESOURCE, keys.clone());
    let claims = json!({"iss": issuer, "sub": "user-1", "aud": RESOURCE, "client_id": "c1",
                        "scope": "tools:read", "jti": "s1", "iat": NOW, "exp": NOW + 900,
                        "status": status});
    let bearer = sign("at+jwt", claims.clone());
    let mut bearer_headers = HeaderMap::new();
    bearer_headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap(),
    );
    for on in [false, true] {
        let row = if on { "on" } else { "off" };
        group.bench_function(format!("status/bearer_es256/repeat/{row}"), |b| {
            b.iter(|| {
                let v = verifier
                    .verify_request("POST", RESOURCE, &bearer_headers, NOW + 1)
                    .unwrap();
                if on {
                    check(&v.claims, at);
                }
                v
            })
        });
    }

    let mut bound_claims = claims;
    bound_claims["cnf"] = json!({"jkt": jkt});
    bound_claims["jti"] = "s2".into();
    let bound = sign("at+jwt", bound_claims);
    let ath = b64(digest(&SHA256, bound.as_bytes()).as_ref());
    for on in [false, true] {
        let row = if on { "on" } else { "off" };
        group.bench_function(format!("status/dpop_es256/repeat/{row}"), |b| {
            b.iter_batched(
                || {
                    let mut h = HeaderMap::new();
                    h.insert(
                        header::AUTHORIZATION,
                        HeaderValue::from_str(&format!("DPoP {bound}")).unwrap(),
                    );
                    h.insert("dpop", HeaderValue::from_str(&fresh_proof(&ath)).unwrap());
                    h
                },
                |h| {
                    let v = verifier
                        .verify_request("POST", RESOURCE, &h, NOW + 1)
                        .unwrap();
                    if on {
                        check(&v.claims, at);
                    }
                    v
                },
                BatchSize::SmallInput,
            )
        });
    }
    drop(runtime);
}

criterion_group!(benches, bench);
criterion_main!(benches);
