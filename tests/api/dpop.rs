//! RFC 9449 at the token endpoint: one test per §4.3 check.

use agentauth_resource::dpop::{self, DpopError, Expectations};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{
    Backend, ISSUER, TestApp, basic, form, jwt_parts, serve_args, spawn_app_with,
};

const TOKEN_URL: &str = "https://auth.example.com/token";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An ES256 proof key that signs any header and claims we give it.
pub struct ProofKey {
    pair: EcdsaKeyPair,
    pub jwk: Value,
}

impl ProofKey {
    pub fn new() -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65]) });
        Self { pair, jwk }
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    pub fn header(&self) -> Value {
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk })
    }

    pub fn claims(&self, htm: &str, htu: &str, iat: i64) -> Value {
        json!({ "jti": agentauth::crypto::random_id().unwrap(), "htm": htm, "htu": htu, "iat": iat })
    }

    /// A good proof for POST /token.
    pub fn proof(&self, app: &TestApp) -> String {
        self.sign(&self.header(), &self.claims("POST", TOKEN_URL, app.now()))
    }

    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            self.jwk["x"], self.jwk["y"]
        );
        b64(&agentauth::crypto::sha256(canonical.as_bytes()))
    }
}

async fn token_with_proofs(
    app: &TestApp,
    id: &str,
    secret: &str,
    proofs: &[&str],
) -> crate::helpers::TestResponse {
    let mut req = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, basic(id, secret));
    for p in proofs {
        req = req.header("DPoP", *p);
    }
    app.send(
        req.body(Body::from(form(&[("grant_type", "client_credentials")])))
            .unwrap(),
    )
    .await
}

/// RFC 9449 §5 and §6: a valid proof binds the token (`cnf.jkt`,
/// `token_type: DPoP`); introspection reports both (§6.2).
async fn dpop_proof_binds_access_token(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    let r = token_with_proofs(&app, &id, &secret, &[&key.proof(&app)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_parts(token).1["cnf"]["jkt"], key.thumbprint().as_str());
    let i = app.introspect(token).await;
    assert_eq!(i["token_type"], "DPoP");
    assert_eq!(i["cnf"]["jkt"], key.thumbprint().as_str());
    // Without a proof the same client gets a plain bearer token.
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(r.json()["token_type"], "Bearer");
    assert!(
        jwt_parts(r.json()["access_token"].as_str().unwrap())
            .1
            .get("cnf")
            .is_none()
    );
}
both!(dpop_proof_binds_access_token);

/// RFC 9449 §4.3 and §11.1: a proof is single use, keyed by (jkt, jti).
async fn dpop_replayed_proof_is_rejected(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    let proof = key.proof(&app);
    assert_eq!(
        token_with_proofs(&app, &id, &secret, &[&proof])
            .await
            .status,
        200
    );
    token_with_proofs(&app, &id, &secret, &[&proof])
        .await
        .assert_error(400, "invalid_dpop_proof");
    // The same jti under another key is another proof.
    let other = ProofKey::new();
    let jti = jwt_parts(&proof).1["jti"].clone();
    let mut claims = other.claims("POST", TOKEN_URL, app.now());
    claims["jti"] = jti;
    assert_eq!(
        token_with_proofs(&app, &id, &secret, &[&other.sign(&other.header(), &claims)])
            .await
            .status,
        200
    );
}
both!(dpop_replayed_proof_is_rejected);

/// RFC 9449 §4.3 checks 1–11 and SECURITY.md, "Resource server kit and DPoP": each bad proof is a
/// 400 `invalid_dpop_proof` and issues nothing.
async fn dpop_bad_proofs_are_invalid_dpop_proof(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    let now = app.now();
    let good_claims = || key.claims("POST", TOKEN_URL, now);
    let with_header = |f: &dyn Fn(&mut Value)| {
        let mut h = key.header();
        f(&mut h);
        key.sign(&h, &good_claims())
    };
    let with_claims = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        key.sign(&key.header(), &c)
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("wrong htm", with_claims(&|c| c["htm"] = json!("GET"))),
        (
            "wrong htu path",
            with_claims(&|c| c["htu"] = json!("https://auth.example.com/introspect")),
        ),
        (
            "wrong htu host",
            with_claims(&|c| c["htu"] = json!("https://evil.example.com/token")),
        ),
        (
            "wrong htu scheme",
            with_claims(&|c| c["htu"] = json!("http://auth.example.com/token")),
        ),
        ("stale iat", with_claims(&|c| c["iat"] = json!(now - 3600))),
        ("future iat", with_claims(&|c| c["iat"] = json!(now + 3600))),
        (
            "iat as string",
            with_claims(&|c| c["iat"] = json!(now.to_string())),
        ),
        (
            "no jti",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "no htu",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("htu");
            }),
        ),
        ("typ JWT", with_header(&|h| h["typ"] = json!("JWT"))),
        (
            "no typ",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("typ");
            }),
        ),
        (
            "no jwk",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
        ),
        (
            "private key in jwk",
            with_header(&|h| h["jwk"]["d"] = json!("AAAA")),
        ),
        (
            "alg RS256 with an EC key",
            with_header(&|h| h["alg"] = json!("RS256")),
        ),
        ("alg ES384", with_header(&|h| h["alg"] = json!("ES384"))),
    ];
    // Bad signature: flip the payload after signing.
    let good = key.proof(&app);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut claims = good_claims();
    claims["htm"] = json!("POST");
    claims["jti"] = json!("tampered");
    parts[1] = b64(claims.to_string().as_bytes());
    cases.push(("bad signature", parts.join(".")));
    // alg none.
    let none_header = json!({ "typ": "dpop+jwt", "alg": "none", "jwk": key.jwk });
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(none_header.to_string().as_bytes()),
            b64(good_claims().to_string().as_bytes())
        ),
    ));
    // HS256 with an oct key in jwk (alg confusion).
    let hs_header =
        json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": { "kty": "oct", "k": b64(b"secret") } });
    let input = format!(
        "{}.{}",
        b64(hs_header.to_string().as_bytes()),
        b64(good_claims().to_string().as_bytes())
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"secret"),
        input.as_bytes(),
    );
    cases.push((
        "HS256 with an oct jwk",
        format!("{input}.{}", b64(tag.as_ref())),
    ));
    cases.push(("not a JWT", "garbage".into()));
    cases.push(("two segments", "a.b".into()));

    for (name, proof) in &cases {
        let r = token_with_proofs(&app, &id, &secret, &[proof]).await;
        assert_eq!(
            r.status,
            400,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"], "invalid_dpop_proof", "{name}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // §4.3 check 1: exactly one DPoP header.
    let r = token_with_proofs(&app, &id, &secret, &[&key.proof(&app), &key.proof(&app)]).await;
    r.assert_error(400, "invalid_dpop_proof");
}
both!(dpop_bad_proofs_are_invalid_dpop_proof);

/// SECURITY.md, "Resource server kit and DPoP": htu with a query, an upper-case host or an
/// explicit :443 is the same URL; iat ±10 s is inside the window.
async fn dpop_equivalent_htu_and_small_skew_are_accepted(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    let now = app.now();
    for (htu, iat) in [
        ("https://auth.example.com/token?x=1", now),
        ("https://AUTH.EXAMPLE.COM/token", now),
        ("https://auth.example.com:443/token", now),
        ("https://auth.example.com/token#frag", now),
        (TOKEN_URL, now - 10),
        (TOKEN_URL, now + 10),
    ] {
        let proof = key.sign(&key.header(), &key.claims("POST", htu, iat));
        let r = token_with_proofs(&app, &id, &secret, &[&proof]).await;
        assert_eq!(
            r.status,
            200,
            "{htu} {iat}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}
both!(dpop_equivalent_htu_and_small_skew_are_accepted);

/// RFC 9449 §5.2 `dpop_bound_access_tokens`: such a client must send a proof.
async fn dpop_bound_client_without_proof_is_rejected(app: TestApp) {
    let reg = app
        .register(json!({ "grant_types": ["client_credentials"], "scope": "read", "dpop_bound_access_tokens": true }))
        .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    assert_eq!(reg["dpop_bound_access_tokens"], true);
    app.token(id, secret, &[])
        .await
        .assert_error(400, "invalid_dpop_proof");
    let key = ProofKey::new();
    let r = token_with_proofs(&app, id, secret, &[&key.proof(&app)]).await;
    assert_eq!(r.json()["token_type"], "DPoP");
}
both!(dpop_bound_client_without_proof_is_rejected);

/// RFC 9449 §8: with nonces on, a proof without one gets `use_dpop_nonce`
/// and a `DPoP-Nonce`; the retry succeeds; a stale nonce is refused again.
#[tokio::test]
async fn dpop_server_nonce_flow() {
    let mut args = serve_args();
    args.dpop_nonce = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();

    let r = token_with_proofs(&app, &id, &secret, &[&key.proof(&app)]).await;
    r.assert_error(400, "use_dpop_nonce");
    let nonce = r
        .header("dpop-nonce")
        .expect("DPoP-Nonce header")
        .to_string();

    let mut claims = key.claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = json!(nonce);
    let r = token_with_proofs(&app, &id, &secret, &[&key.sign(&key.header(), &claims)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("dpop-nonce").is_some(),
        "successful responses carry the current nonce"
    );

    let mut claims = key.claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = json!("forged-nonce");
    token_with_proofs(&app, &id, &secret, &[&key.sign(&key.header(), &claims)])
        .await
        .assert_error(400, "use_dpop_nonce");

    app.clock.advance(700);
    let mut claims = key.claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = json!(nonce);
    let r = token_with_proofs(&app, &id, &secret, &[&key.sign(&key.header(), &claims)]).await;
    r.assert_error(400, "use_dpop_nonce");
    assert_ne!(
        r.header("dpop-nonce"),
        Some(nonce.as_str()),
        "a fresh nonce is handed out"
    );
}

/// Two nodes on one PostgreSQL: a proof spent on one is refused on the
/// other, and a nonce minted by one is accepted by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_replay_and_nonces_work_across_nodes() {
    let (a, b) = crate::helpers::spawn_pg_nodes_with(|args| args.dpop_nonce = true).await;
    let (id, secret) = a.cc_client("read").await;
    let key = ProofKey::new();
    let nonce = token_with_proofs(&a, &id, &secret, &[&key.proof(&a)])
        .await
        .header("dpop-nonce")
        .unwrap()
        .to_string();
    let mut claims = key.claims("POST", TOKEN_URL, a.now());
    claims["nonce"] = json!(nonce);
    let proof = key.sign(&key.header(), &claims);
    assert_eq!(
        token_with_proofs(&b, &id, &secret, &[&proof]).await.status,
        200,
        "node b accepts node a's nonce"
    );
    token_with_proofs(&a, &id, &secret, &[&proof])
        .await
        .assert_error(400, "invalid_dpop_proof");
}

/// RFC 9449 §4.3 check 12: when a token comes with the proof, `ath` must be
/// its hash (resource side; exercised through the shared checker).
#[test]
fn dpop_ath_must_match_the_access_token() {
    let key = ProofKey::new();
    let now = 1_800_000_000;
    let expect = |token| Expectations {
        htm: "GET",
        htu: "https://mcp.example.com/mcp",
        now,
        iat_window: 60,
        access_token: Some(token),
        nonces: None,
    };
    let mut claims = key.claims("GET", "https://mcp.example.com/mcp", now);
    assert_eq!(
        dpop::verify_proof(&key.sign(&key.header(), &claims), &expect("tok")).unwrap_err(),
        DpopError::Invalid("DPoP proof ath does not match the access token")
    );
    claims["ath"] = json!(dpop::ath("other"));
    assert!(dpop::verify_proof(&key.sign(&key.header(), &claims), &expect("tok")).is_err());
    claims["ath"] = json!(dpop::ath("tok"));
    let ok = dpop::verify_proof(&key.sign(&key.header(), &claims), &expect("tok")).unwrap();
    assert_eq!(ok.jkt, key.thumbprint());
}

/// RFC 9449 §5.1: metadata lists the proof algorithms, never none or a MAC.
#[tokio::test]
async fn metadata_advertises_dpop_algorithms() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    let m = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    let algs: Vec<&str> = m["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(algs.contains(&"ES256") && algs.contains(&"EdDSA"));
    assert!(algs.iter().all(|a| *a != "none" && !a.starts_with("HS")));
    assert_eq!(m["issuer"], ISSUER);
}

/// 64 concurrent uses of one proof: exactly one is accepted (on PostgreSQL
/// the jti spends are batched; the batch must not let two win).
async fn dpop_concurrent_replay_has_one_winner(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    let proof = key.proof(&app);
    let app = std::sync::Arc::new(app);
    let statuses = crate::helpers::race(64, || {
        let (app, id, secret, proof) = (app.clone(), id.clone(), secret.clone(), proof.clone());
        async move {
            token_with_proofs(&app, &id, &secret, &[&proof])
                .await
                .status
                .as_u16()
        }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 400));
}
both!(dpop_concurrent_replay_has_one_winner);

/// The PostgreSQL replay batcher (`agentauth::replay::batch`): a batch goes
/// when an answer from it is asked for, all its spends in one statement;
/// a spend nobody asks about still lands within the linger; and one key
/// queued twice wins once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_batches_go_when_asked_and_never_lose_a_spend() {
    use agentauth::replay::batch::{BatchCounters, MAX_LINGER, ReplayBatcher};
    let app = crate::helpers::spawn_app(Backend::Postgres).await;
    let counters = BatchCounters::default();
    // A long linger: only the asking sends the first batch.
    let batcher = ReplayBatcher::start_with(
        app.state.db.clone(),
        counters.clone(),
        std::time::Duration::from_secs(30),
    );
    let exp = app.now() + 120;
    let key = |i: usize| format!("test-batch:{}:{i}", app.now());

    // Twenty spends queued, one asked for: one statement carries them all,
    // and the repeated key loses inside the batch.
    let mut tickets: Vec<_> = (0..20)
        .map(|i| batcher.enqueue(key(i), exp).unwrap())
        .collect();
    let repeated = batcher.enqueue(key(0), exp).unwrap();
    let last = tickets.pop().unwrap();
    assert!(last.outcome().await.unwrap());
    assert_eq!(counters.statements.get(), 1);
    assert_eq!(counters.spends.get(), 21);
    for t in tickets {
        assert!(t.outcome().await.unwrap(), "answered by the same statement");
    }
    assert!(!repeated.outcome().await.unwrap(), "one key wins once");
    assert_eq!(counters.statements.get(), 1);

    // A spend whose answer nobody asks for still goes, after the linger.
    let counters = BatchCounters::default();
    let batcher = ReplayBatcher::start(app.state.db.clone(), counters.clone());
    drop(batcher.enqueue(key(100), exp).unwrap());
    tokio::time::sleep(MAX_LINGER * 5).await;
    assert_eq!(counters.statements.get(), 1);
    assert!(!batcher.use_once(key(100), exp).await.unwrap());

    // Dropping the batcher sends what is queued before it stops.
    let pending = batcher.enqueue(key(200), exp).unwrap();
    drop(batcher);
    assert!(pending.outcome().await.unwrap());
    let again = ReplayBatcher::start(app.state.db.clone(), BatchCounters::default());
    assert!(
        !again.use_once(key(200), exp).await.unwrap(),
        "it was stored"
    );
}

/// The replay check fails closed: with PostgreSQL gone, a DPoP token
/// request (whose client is cached, so only the jti spend needs the
/// database) is a 503 `temporarily_unavailable` with Retry-After, and no
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_replay_store_lost_is_a_503_not_a_token() {
    let app = crate::helpers::spawn_app(Backend::Postgres).await;
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    assert_eq!(
        token_with_proofs(&app, &id, &secret, &[&key.proof(&app)])
            .await
            .status,
        200
    );
    app.state.db.clone().close().await.unwrap();
    let r = token_with_proofs(&app, &id, &secret, &[&key.proof(&app)]).await;
    let body = r.assert_error(503, "temporarily_unavailable");
    assert!(body.get("access_token").is_none());
    assert_eq!(r.header("retry-after"), Some("5"));
}
