//! Resource-side verification (RFC 9449 §7, RFC 6750 §3): what an MCP
//! server using our kit sees.

use agentauth::state::AppState;
use agentauth_resource::dpop::{self, NonceKey};
use agentauth_resource::{KeySource, ResourceError, ResourceVerifier, VerifyingKey};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::dpop::ProofKey;
use crate::helpers::{Backend, ISSUER, TestApp, basic, form, spawn_app};

const MCP: &str = "https://mcp.example.com/mcp";

pub struct AsKeys(pub AppState);

impl KeySource for AsKeys {
    fn key(&self, kid: &str) -> Option<std::sync::Arc<VerifyingKey>> {
        self.0.tokens.keys.key(kid)
    }
}

fn verifier(app: &TestApp) -> ResourceVerifier<AsKeys> {
    ResourceVerifier::new(ISSUER, MCP, AsKeys(app.state.clone()))
}

async fn dpop_token(app: &TestApp, key: &ProofKey) -> String {
    let (id, secret) = app.cc_client("read").await;
    let proof = key.proof(app);
    let r = app
        .send(
            axum::http::Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic(&id, &secret))
                .header("DPoP", proof)
                .body(axum::body::Body::from(form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", MCP),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    r.json()["access_token"].as_str().unwrap().to_string()
}

fn request(scheme: &str, token: &str, proof: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("{scheme} {token}")).unwrap(),
    );
    if let Some(p) = proof {
        h.insert("dpop", HeaderValue::from_str(p).unwrap());
    }
    h
}

fn resource_proof(key: &ProofKey, now: i64, token: Option<&str>) -> String {
    let mut claims = key.claims("GET", MCP, now);
    if let Some(t) = token {
        claims["ath"] = json!(dpop::ath(t));
    }
    key.sign(&key.header(), &claims)
}

fn challenges(e: ResourceError) -> (u16, Vec<String>) {
    let r = e.into_response();
    let list = r
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (r.status().as_u16(), list)
}

#[tokio::test]
async fn bearer_token_for_this_resource_is_accepted() {
    let app = spawn_app(Backend::Sqlite).await;
    let (id, secret) = app.cc_client("read").await;
    let r = app.token(&id, &secret, &[("resource", MCP)]).await;
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let claims = verifier(&app)
        .verify("GET", MCP, &request("Bearer", &token, None), app.now())
        .unwrap();
    assert_eq!(claims.client_id, id);

    // SECURITY.md, "Resource server kit and DPoP": a token for another audience is refused.
    let other = app
        .token(&id, &secret, &[("resource", "https://other.example.com/")])
        .await;
    let other = other.json()["access_token"].as_str().unwrap().to_string();
    let e = verifier(&app)
        .verify("GET", MCP, &request("Bearer", &other, None), app.now())
        .unwrap_err();
    assert!(matches!(e, ResourceError::InvalidToken(_)));
    let (status, ch) = challenges(e);
    assert_eq!(status, 401);
    assert!(
        ch.iter()
            .any(|c| c.starts_with("Bearer error=\"invalid_token\""))
    );

    // Just expired: within the 30 s leeway for clock skew; then refused.
    app.clock.advance(901);
    assert!(
        verifier(&app)
            .verify("GET", MCP, &request("Bearer", &token, None), app.now())
            .is_ok()
    );
    app.clock.advance(30);
    assert!(matches!(
        verifier(&app).verify("GET", MCP, &request("Bearer", &token, None), app.now()),
        Err(ResourceError::InvalidToken(_))
    ));
}

/// RFC 9449 §7: a bound token needs the DPoP scheme, one proof by the bound
/// key, with `ath`; each failure is `invalid_dpop_proof` with `algs`.
#[tokio::test]
async fn dpop_bound_token_requires_matching_proof() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = ProofKey::new();
    let token = dpop_token(&app, &key).await;
    let v = verifier(&app);
    let now = app.now();

    let ok = resource_proof(&key, now, Some(&token));
    assert!(
        v.verify("GET", MCP, &request("DPoP", &token, Some(&ok)), now)
            .is_ok()
    );
    // Replay of the same proof.
    let e = v
        .verify("GET", MCP, &request("DPoP", &token, Some(&ok)), now)
        .unwrap_err();
    assert!(matches!(e, ResourceError::InvalidDpopProof(_)), "{e:?}");

    // SECURITY.md, "Resource server kit and DPoP": bound token sent as Bearer.
    let e = v
        .verify("GET", MCP, &request("Bearer", &token, None), now)
        .unwrap_err();
    assert!(matches!(e, ResourceError::InvalidToken(_)));
    let (status, ch) = challenges(e);
    assert_eq!(status, 401);
    assert!(
        ch.iter()
            .any(|c| c.starts_with("DPoP ") && c.contains("algs=\"ES256"))
    );

    let cases = [
        ("no proof", None),
        ("missing ath", Some(resource_proof(&key, now, None))),
        (
            "wrong ath",
            Some(resource_proof(&key, now, Some("another-token"))),
        ),
        (
            "another key",
            Some(resource_proof(&ProofKey::new(), now, Some(&token))),
        ),
        (
            "wrong htm",
            Some({
                let mut c = key.claims("POST", MCP, now);
                c["ath"] = json!(dpop::ath(&token));
                key.sign(&key.header(), &c)
            }),
        ),
    ];
    for (name, proof) in cases {
        let e = v
            .verify("GET", MCP, &request("DPoP", &token, proof.as_deref()), now)
            .unwrap_err();
        assert!(
            matches!(e, ResourceError::InvalidDpopProof(_)),
            "{name}: {e:?}"
        );
        let (status, ch) = challenges(e);
        assert_eq!(status, 401, "{name}");
        assert!(
            ch[0].starts_with("DPoP error=\"invalid_dpop_proof\"") && ch[0].contains("algs="),
            "{name}: {ch:?}"
        );
    }
}

#[tokio::test]
async fn missing_and_forged_tokens_get_challenges() {
    let app = spawn_app(Backend::Sqlite).await;
    let v = verifier(&app);
    let e = v
        .verify("GET", MCP, &HeaderMap::new(), app.now())
        .unwrap_err();
    assert_eq!(e, ResourceError::MissingToken);
    let (status, ch) = challenges(e);
    assert_eq!(status, 401);
    assert!(
        ch.iter().any(|c| c.starts_with("DPoP algs="))
            && ch.iter().any(|c| c.starts_with("Bearer"))
    );
    // SECURITY.md, "Resource server kit and DPoP": alg none with our kid.
    let none =
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20ifQ.";
    assert!(matches!(
        v.verify("GET", MCP, &request("Bearer", none, None), app.now()),
        Err(ResourceError::InvalidToken(_))
    ));
}

/// RFC 9449 §9: a resource that requires nonces answers `use_dpop_nonce`
/// with a `DPoP-Nonce` header.
#[tokio::test]
async fn resource_nonce_is_required_when_configured() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = ProofKey::new();
    let token = dpop_token(&app, &key).await;
    let mut v = verifier(&app);
    v.nonces = Some(NonceKey::new(&[9u8; 32], 300));
    let e = v
        .verify(
            "GET",
            MCP,
            &request(
                "DPoP",
                &token,
                Some(&resource_proof(&key, app.now(), Some(&token))),
            ),
            app.now(),
        )
        .unwrap_err();
    let ResourceError::UseDpopNonce(nonce) = e.clone() else {
        panic!("{e:?}")
    };
    let r = e.into_response();
    assert_eq!(r.headers().get("dpop-nonce").unwrap(), nonce.as_str());
    let mut claims = key.claims("GET", MCP, app.now());
    claims["ath"] = json!(dpop::ath(&token));
    claims["nonce"] = json!(nonce);
    assert!(
        v.verify(
            "GET",
            MCP,
            &request("DPoP", &token, Some(&key.sign(&key.header(), &claims))),
            app.now()
        )
        .is_ok()
    );
}

/// RFC 9449 §11.1 at the resource: one proof replayed from many threads at
/// once is accepted exactly once, round after round.
#[tokio::test]
async fn concurrent_proof_replay_at_the_resource_has_one_winner() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = ProofKey::new();
    let token = dpop_token(&app, &key).await;
    let v = std::sync::Arc::new(verifier(&app));
    let now = app.now();
    for _ in 0..50 {
        let headers = request(
            "DPoP",
            &token,
            Some(&resource_proof(&key, now, Some(&token))),
        );
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (v, headers, barrier) = (v.clone(), headers.clone(), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        v.verify("GET", MCP, &headers, now).is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
    }
}
