use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, ISSUER, TestApp, serve_args, spawn_app_with};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An ES256 key pair: the private key for signing, the public JWK to register.
pub struct ClientKey {
    encoding: EncodingKey,
    pub jwk: Value,
}

pub fn client_key(kid: &str) -> ClientKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let public = pair.public_key().as_ref().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    ClientKey {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({ "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                     "x": b64(&public[1..33]), "y": b64(&public[33..65]) }),
    }
}

impl ClientKey {
    /// Signs `claims` with a `typ` header.
    pub fn sign_typed(&self, typ: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_string);
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }

    pub fn assertion(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn claims(app: &TestApp, client_id: &str, jti: &str) -> Value {
    json!({ "iss": client_id, "sub": client_id, "aud": ISSUER, "jti": jti, "iat": app.now(), "exp": app.now() + 60 })
}

async fn register_pkjwt(app: &TestApp, jwks: Value) -> String {
    let reg = app
        .register(json!({
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks, "scope": "read",
        }))
        .await;
    reg["client_id"].as_str().unwrap().to_string()
}

async fn token_with(app: &TestApp, assertion: &str) -> crate::helpers::TestResponse {
    app.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
        None,
    )
    .await
}

/// RFC 7523 §3: a valid assertion authenticates; `aud` is the issuer or
/// the token endpoint URL, alone or in a list of only those (issue 12 item
/// 4): a list that also names another party, or another endpoint's URL, is
/// refused.
async fn private_key_jwt_authenticates(app: TestApp) {
    let key = client_key("k1");
    let id = register_pkjwt(&app, json!({ "keys": [key.jwk] })).await;
    let r = token_with(&app, &key.assertion(claims(&app, &id, "jti-1"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut c = claims(&app, &id, "jti-2");
    c["aud"] = json!(format!("{ISSUER}/token"));
    assert_eq!(token_with(&app, &key.assertion(c)).await.status, 200);
    let mut c = claims(&app, &id, "jti-3");
    c["aud"] = json!([ISSUER]);
    assert_eq!(token_with(&app, &key.assertion(c)).await.status, 200);
    for (jti, aud) in [
        ("jti-4", json!(["https://other.example.com", ISSUER])),
        ("jti-5", json!(format!("{ISSUER}/introspect"))),
        ("jti-6", json!([])),
        ("jti-7", json!(format!("{ISSUER}/"))),
    ] {
        let mut c = claims(&app, &id, jti);
        c["aud"] = aud.clone();
        token_with(&app, &key.assertion(c))
            .await
            .assert_error(401, "invalid_client");
    }
}
both!(private_key_jwt_authenticates);

/// SECURITY.md, "Token endpoint: code grant" (fosite GHSA-v3q9-2p3m-7g43): the jti is single use.
async fn private_key_jwt_replayed_jti_is_invalid_client(app: TestApp) {
    let key = client_key("k1");
    let id = register_pkjwt(&app, json!({ "keys": [key.jwk] })).await;
    let assertion = key.assertion(claims(&app, &id, "once"));
    assert_eq!(token_with(&app, &assertion).await.status, 200);
    token_with(&app, &assertion)
        .await
        .assert_error(401, "invalid_client");
    // A new assertion reusing the jti is a replay too.
    let again = key.assertion(claims(&app, &id, "once"));
    token_with(&app, &again)
        .await
        .assert_error(401, "invalid_client");
}
both!(private_key_jwt_replayed_jti_is_invalid_client);

/// SECURITY.md, "Token endpoint: code grant": wrong aud, stale or far exp, iss ≠ sub, foreign key,
/// MAC algorithm, missing assertion type: all `invalid_client`.
async fn private_key_jwt_bad_assertions_are_invalid_client(app: TestApp) {
    let key = client_key("k1");
    let id = register_pkjwt(&app, json!({ "keys": [key.jwk] })).await;
    let now = app.now();
    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(
            &app,
            &id,
            &format!("j-{}", agentauth::crypto::random_id().unwrap()),
        );
        f(&mut c);
        key.assertion(c)
    };
    cases.push((
        "wrong aud",
        with(&|c| c["aud"] = json!("https://evil.example.com")),
    ));
    cases.push(("expired", with(&|c| c["exp"] = json!(now - 1))));
    cases.push(("exp far ahead", with(&|c| c["exp"] = json!(now + 3600))));
    cases.push((
        "exp as string",
        with(&|c| c["exp"] = json!((now + 60).to_string())),
    ));
    cases.push((
        "no exp",
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    cases.push((
        "no jti",
        with(&|c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
    ));
    cases.push(("iat in the future", with(&|c| c["iat"] = json!(now + 300))));
    cases.push(("sub differs", with(&|c| c["sub"] = json!("someone-else"))));
    let stranger = client_key("k1");
    cases.push((
        "foreign key",
        stranger.assertion(claims(&app, &id, "foreign")),
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let mac = jsonwebtoken::encode(
        &hs,
        &claims(&app, &id, "mac"),
        &EncodingKey::from_secret(b"k1"),
    )
    .unwrap();
    cases.push(("HS256", mac));
    let mut payload = claims(&app, &id, "none");
    payload["alg"] = json!("none");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    cases.push((
        "alg none",
        format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&payload)),
    ));
    cases.push(("garbage", "not.a.jwt".to_string()));
    for (name, assertion) in cases {
        let r = token_with(&app, &assertion).await;
        assert_eq!(
            r.status,
            401,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"], "invalid_client", "{name}");
    }
    let ok = key.assertion(claims(&app, &id, "typeless"));
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion", &ok),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
}
both!(private_key_jwt_bad_assertions_are_invalid_client);

/// SECURITY.md, "Registration and client metadata documents": a jwks_uri that resolves to a loopback or private
/// address is never fetched.
#[tokio::test]
async fn jwks_uri_on_private_address_is_refused() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    let key = client_key("k1");
    for uri in [
        "https://127.0.0.1/jwks.json",
        "https://2130706433/jwks.json",
        "https://[::1]/jwks.json",
        "https://localhost/jwks.json",
    ] {
        let reg = app
            .register(json!({
                "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": uri,
            }))
            .await;
        let id = reg["client_id"].as_str().unwrap();
        token_with(&app, &key.assertion(claims(&app, id, "x")))
            .await
            .assert_error(401, "invalid_client");
    }
}

/// A jwks_uri is fetched, cached and used (SSRF guards relaxed for the
/// loopback test server only).
#[tokio::test]
async fn jwks_uri_is_fetched_and_used() {
    let key = client_key("remote");
    let jwks = json!({ "keys": [key.jwk] }).to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || async move { jwks }),
    );
    tokio::spawn(async move { axum::serve(listener, server).await });

    let mut args = serve_args();
    args.insecure_fetch = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let reg = app
        .register(json!({
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": format!("http://{addr}/jwks.json"),
        }))
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let r = token_with(&app, &key.assertion(claims(&app, id, "remote-1"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// SECURITY.md, "Token endpoint: code grant" and the reliability rule: 64 concurrent uses of
/// one assertion, exactly one wins.
async fn private_key_jwt_concurrent_replay_has_one_winner(app: TestApp) {
    let key = client_key("k1");
    let id = register_pkjwt(&app, json!({ "keys": [key.jwk] })).await;
    let assertion = key.assertion(claims(&app, &id, "raced"));
    let app = std::sync::Arc::new(app);
    let statuses = crate::helpers::race(64, || {
        let (app, assertion) = (app.clone(), assertion.clone());
        async move { token_with(&app, &assertion).await.status.as_u16() }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
}
both!(private_key_jwt_concurrent_replay_has_one_winner);

/// Two nodes on one PostgreSQL: an assertion spent on one is refused on
/// the other (the replay store is the database, not a node's memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_replay_is_refused_across_nodes() {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    let key = client_key("k1");
    let id = register_pkjwt(&a, json!({ "keys": [key.jwk] })).await;
    let assertion = key.assertion(claims(&a, &id, "cross-node"));
    let (ra, rb) = tokio::join!(token_with(&a, &assertion), token_with(&b, &assertion));
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
    token_with(&b, &assertion)
        .await
        .assert_error(401, "invalid_client");
    // Both nodes sign with keys the other publishes.
    let token = a.token_for_pkjwt(&key, &id).await;
    assert_eq!(b.introspect(&token).await["active"], true);
}

impl TestApp {
    async fn token_for_pkjwt(&self, key: &ClientKey, id: &str) -> String {
        let r = token_with(
            self,
            &key.assertion(claims(self, id, &agentauth::crypto::random_id().unwrap())),
        )
        .await;
        assert_eq!(r.status, 200);
        r.json()["access_token"].as_str().unwrap().to_string()
    }
}
